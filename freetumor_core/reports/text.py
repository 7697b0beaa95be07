"""Report text: findings and impression sentences, and which findings are negated or uncertain.

A report is split into sections (an ``IMPRESSION:``/``CONCLUSION:`` heading, or, in CT-RATE's export,
the first double quote), each section into sentences, and each sentence into phrases, each with one
polarity: ``affirmed``, ``negated`` or ``uncertain``. The rules are NegEx-style (Chapman et al. 2001;
ConText): pre-negation triggers ("no", "without", "absence of") negate what follows them up to a scope
terminator ("but", "however", ";", a new clause); post-negation triggers ("was not observed", "no ...
was detected", "is absent") negate the clause before them; pseudo-triggers ("no change", "cannot be
excluded") are not negations; "?", "possible", "suspicious for" and the like make a clause uncertain.
So "No pleural effusion was detected" is one negated phrase, and "Heart size is normal and no
pericardial effusion was observed" is an affirmed phrase followed by a negated one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["POLARITIES", "Phrase", "Sentence", "phrases_of", "split_report", "split_sentences"]

POLARITIES = ("affirmed", "negated", "uncertain")

# -- sections and sentences ------------------------------------------------------------------------
_HEADING = re.compile(r"\b(impression|conclusions?|opinion)\s*:", re.IGNORECASE)
_FINDINGS_HEADING = re.compile(r"^\s*(findings|report)\s*:\s*", re.IGNORECASE)
_ABBREVIATIONS = ("e.g.", "i.e.", "vs.", "approx.", "etc.", "dr.", "fig.", "no.", "nr.", "cf.", "st.")
_SENTENCE_END = re.compile(
    r"(?<=[.!?])\s+(?=[\"'(\[•]?\s*[A-Z0-9])|\s*\n\s*\n\s*|\s*\n(?=\s*[-*•\d])|\s*•\s*"
)


def split_sentences(text: str) -> list[str]:
    """Sentences of one section: split after ``.``, ``!`` or ``?`` before a capital or digit (never
    inside a decimal such as ``1.5 cm`` or after an abbreviation such as ``e.g.``), and at blank lines
    and list items."""
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        before = text[start : match.start()]
        last_word = before.rsplit(None, 1)[-1].lower() if before.split() else ""
        if last_word in _ABBREVIATIONS:
            continue
        pieces.append(before)
        start = match.end()
    pieces.append(text[start:])
    sentences = []
    for piece in pieces:
        piece = re.sub(r"\s+", " ", piece).strip(" \t\"'-*•")
        if re.search(r"[A-Za-z]{2}", piece):
            sentences.append(piece)
    return sentences


@dataclass(frozen=True)
class Phrase:
    """A span of a sentence with one polarity (``affirmed``, ``negated`` or ``uncertain``)."""

    text: str
    polarity: str


@dataclass(frozen=True)
class Sentence:
    """One sentence of a report: its section (``findings`` or ``impression``) and its phrases."""

    text: str
    section: str
    phrases: tuple[Phrase, ...]

    @property
    def negated(self) -> bool:
        """Every phrase of the sentence is negated."""
        return all(phrase.polarity == "negated" for phrase in self.phrases)

    @property
    def uncertain(self) -> bool:
        """Some phrase of the sentence is uncertain."""
        return any(phrase.polarity == "uncertain" for phrase in self.phrases)


def split_report(text: str) -> list[Sentence]:
    """The findings sentences, then the impression sentences, each split into polarity phrases."""
    text = str(text or "")
    heading = _HEADING.search(text)
    if heading:
        findings, impression = text[: heading.start()], [text[heading.end() :]]
    elif '"' in text:  # CT-RATE: findings, then impression items each opened by a double quote
        findings, *impression = text.split('"')
    else:
        findings, impression = text, []
    findings = _FINDINGS_HEADING.sub("", findings)
    sentences = [Sentence(s, "findings", tuple(phrases_of(s))) for s in split_sentences(findings)]
    for item in impression:
        sentences += [Sentence(s, "impression", tuple(phrases_of(s))) for s in split_sentences(item)]
    return sentences


# -- negation and uncertainty ----------------------------------------------------------------------
def _words(*phrases: str) -> str:
    return "|".join(phrases)


# Not negations, although they contain a trigger word: matched first and masked.
_PSEUDO = re.compile(
    r"\b(?:no|without|not)\s+(?:significant\s+|obvious\s+|marked\s+|apparent\s+|interval\s+)?"
    r"(?:change|changes|difference|progression|regression|increase|decrease)\b"
    r"|\b(?:not|did not|has not|have not|was not|were not)\s+(?:significantly\s+)?"
    r"(?:change|changed|progress|progressed|increase|increased in size|regress|regressed)\b"
    r"|\bnot only\b|\bgram negative\b|\bno other\b(?=.*\b(?:observed|seen|detected)\b)",
    re.IGNORECASE,
)
_UNCERTAIN = re.compile(
    r"\?|\b(?:"
    + _words(
        r"possible",
        r"possibly",
        r"probable",
        r"probably",
        r"suspicious",
        r"suspected",
        r"suspicion",
        r"questionable",
        r"equivocal",
        r"may be",
        r"might be",
        r"could be",
        r"cannot be (?:excluded|ruled out)",
        r"can ?not be (?:excluded|ruled out)",
        r"could not be (?:excluded|ruled out)",
        r"not excluded",
        r"not ruled out",
        r"differential diagnosis",
        r"rule out",
        r"r/o",
        r"versus",
        r"likely",
    )
    + r")\b",
    re.IGNORECASE,
)
_PRE_NEGATION = re.compile(
    r"\b(?:"
    + _words(
        r"no",
        r"not",
        r"without",
        r"absence of",
        r"absent",
        r"negative for",
        r"free of",
        r"neither",
        r"nor",
        r"none",
        r"there is no",
        r"there are no",
        r"there was no",
        r"there were no",
        r"no evidence of",
        r"no signs? of",
        r"rather than",
        r"resolved",
        r"no longer",
    )
    + r")\b",
    re.IGNORECASE,
)
_POST_NEGATION = re.compile(
    r"\b(?:(?:is|are|was|were|has been|have been|could be|can be)\s+)?(?:not|n't)\s+"
    r"(?:(?:clearly|definitely|significantly|particularly)\s+)?"
    r"(?:observed|detected|seen|identified|noted|found|present|visualized|visualised|evident|demonstrated|"
    r"appreciated|shown|monitored|encountered|determined|distinguished|followed)\b"
    r"|\b(?:is|are|was|were)\s+(?:absent|excluded|ruled out|resolved|not present)\b"
    r"|\b(?:has|have)\s+(?:resolved|disappeared)\b",
    re.IGNORECASE,
)
# Scope terminators: a negation never reaches past these.
_TERMINATOR = re.compile(
    r"\(|\)|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bwhereas\b|\bwhile\b|\bexcept\b|"
    r"\bapart from\b|\baside from\b|\bother than\b|\byet\b|\bwhich\b|\bwith the exception of\b",
    re.IGNORECASE,
)
# A new clause after "and" or a comma when a negation trigger opens it ("..., and no effusion").
_CLAUSE_BEFORE_NEGATION = re.compile(
    r"(?:,\s*and\b|,|\band\b)(?=\s+(?:there\s+(?:is|are|was|were)\s+)?(?:no|without|not)\b)", re.IGNORECASE
)
# A verb that ends a clause: a post-negation's backward scope stops at an "and" or comma after one.
_CLAUSE_VERB = re.compile(
    r"\b(?:is|are|was|were|has|have|observed|detected|seen|noted|increased|decreased|normal|natural|"
    r"preserved|open|present|enlarged|dilated|thickened|identified)\b",
    re.IGNORECASE,
)
_MIN_LETTERS = 4  # a phrase shorter than this (in letters) is dropped: "and", "the"


def _clauses(sentence: str) -> list[tuple[str, str]]:
    """Clauses of a sentence; a lead-in without a verb before ``;`` or ``:`` ("When examined in the
    lung parenchyma window; no nodule ...") joins the clause it introduces and takes its polarity."""
    clauses: list[tuple[str, str]] = []
    lead = ""
    pieces = re.split(r"([;:])", sentence)
    for index in range(0, len(pieces), 2):
        piece = pieces[index].strip(" ,.")
        opens = index + 1 < len(pieces) and index + 2 < len(pieces)
        if opens and piece and not _CLAUSE_VERB.search(piece) and len(piece.split()) <= 12:
            lead = f"{lead} {piece}".strip()
            continue
        for part in _TERMINATOR.split(piece):
            for clause in _CLAUSE_BEFORE_NEGATION.split(part):
                clause = clause.strip(" ,.")
                if clause:
                    clauses.append((lead, clause))
                    lead = ""
    if lead:
        clauses.append(("", lead))
    return clauses


def _mask(pattern: re.Pattern[str], text: str) -> str:
    """``text`` with ``pattern``'s matches blanked out (same length, so offsets stay)."""
    return pattern.sub(lambda match: " " * len(match.group()), text)


def _post_scope_start(clause: str, trigger_start: int) -> int:
    """Where a post-negation's backward scope begins: after the last "and" or comma that closes an
    earlier clause with its own verb ("Heart size increased and effusion was not observed"), else 0."""
    start = 0
    for match in re.finditer(r",|\band\b", clause[:trigger_start]):
        if _CLAUSE_VERB.search(clause[start : match.start()]):
            start = match.end()
    return start


def _keep(text: str) -> bool:
    return len(re.findall(r"[A-Za-z]", text)) >= _MIN_LETTERS


def _polarity_phrases(clause: str) -> list[Phrase]:
    masked = _mask(_PSEUDO, clause)
    if _UNCERTAIN.search(masked):
        return [Phrase(clause, "uncertain")]
    post = _POST_NEGATION.search(masked)
    pre = _PRE_NEGATION.search(masked)
    if post:
        start = _post_scope_start(masked, post.start())
    elif pre:
        start = pre.start()
    else:
        return [Phrase(clause, "affirmed")]
    before = re.sub(r"(?:\s*,)?\s*\band\s*$", "", clause[:start]).strip(" ,")
    phrases = [Phrase(before, "affirmed")] if _keep(before) else []
    return [*phrases, Phrase(clause[start:].strip(" ,"), "negated")]


def phrases_of(sentence: str) -> list[Phrase]:
    """The polarity phrases of one sentence, in order."""
    phrases: list[Phrase] = []
    for lead, clause in _clauses(sentence):
        found = _polarity_phrases(clause)
        if lead:  # the lead-in joins the first phrase it introduces
            found[0] = Phrase(f"{lead}; {found[0].text}", found[0].polarity)
        phrases += found
    return [phrase for phrase in phrases if _keep(phrase.text)] or [Phrase(sentence, "affirmed")]
