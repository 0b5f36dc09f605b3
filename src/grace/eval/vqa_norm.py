"""VQA answer normalisation and the 10-annotator soft score (VQAv2, TextVQA, synthvqa).

Invariant: two normalisers, kept separate because the official tools differ:

* :func:`evalai_normalize` — the "EvalAI processor" LLaVA applies to predictions before upload and
  that the TextVQA evaluator applies to both sides: lower-case, drop ``,``/``?``, split ``'s``, then
  the punctuation rule, then number words / articles / contractions.
* :func:`official_normalize` — the GitHub ``vqaEval.py`` steps (punctuation, then digits/articles),
  used by :func:`vqa_official_accuracy` only when the 10 human answers disagree.

The tables are data transcribed from the official evaluator (BENCHMARKS.md §2).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip

NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")

# The official and the EvalAI copies test "a comma between digits" with different patterns.
_OFFICIAL_COMMA = re.compile(r"(\d)(,)(\d)")
_EVALAI_COMMA = re.compile(r"(?<=\d)(,)+(?=\d)")
# Upstream writes "(?!<=\d)(\.)(?!\d)": the first group is a (vacuous) look-ahead, so in effect a
# period is dropped whenever no digit follows it. Upstream also passes re.UNICODE (=32) in the
# count slot, capping removals at 32 per string; kept for exactness.
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_MAX = 32


def _punctuation(text: str, comma_digit: re.Pattern) -> str:
    out = text
    has_comma_digit = comma_digit.search(text) is not None
    for p in PUNCTUATION:
        # The test looks at the string as it was when the step started, not at the running result.
        if (p + " " in text or " " + p in text) or has_comma_digit:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=_PERIOD_MAX)


def _digits_articles(text: str) -> str:
    words = []
    for w in text.lower().split():
        w = NUMBER_WORDS.get(w, w)
        if w not in ARTICLES:
            words.append(w)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def official_normalize(text: str) -> str:
    """``vqaEval.py``'s processPunctuation + processDigitArticle (no lower-casing step of its own
    before the punctuation rule). ``official_normalize("Two.") == "2"``"""
    return _digits_articles(_punctuation(text, _OFFICIAL_COMMA))


def evalai_normalize(text: str) -> str:
    """The EvalAI answer processor (LLaVA ``m4c_evaluator``). ``evalai_normalize("Coca-Cola.") == "coca cola"``"""
    t = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    t = t.replace("\n", " ").replace("\t", " ").strip()
    t = _punctuation(t, _EVALAI_COMMA)
    return _digits_articles(t)


def leave_one_out_score(pred: str, gts: Sequence[str]) -> float:
    """Mean over the leave-one-annotator-out subsets of min(1, #matches/3). Entries are distinct by
    position (each annotation has its own id), so equal texts still count separately."""
    n = len(gts)
    if n == 0:
        return 0.0
    k = sum(1 for g in gts if g == pred)
    if k == 0:
        return 0.0
    # Dropping a matching annotator leaves k-1 matches, dropping another leaves k.
    total = k * min(1.0, (k - 1) / 3.0) + (n - k) * min(1.0, k / 3.0)
    return total / n


def vqa_official_accuracy(pred: str, gts: Sequence[str]) -> float:
    """One question under ``vqaEval.py``: normalise both sides only if the humans disagree.

    ``vqa_official_accuracy("3", ["3"] * 10) == 1.0``
    """
    pred = pred.replace("\n", " ").replace("\t", " ").strip()
    gts = [g.replace("\n", " ").replace("\t", " ").strip() for g in gts]
    if len(set(gts)) > 1:
        gts = [official_normalize(g) for g in gts]
        pred = official_normalize(pred)
    return leave_one_out_score(pred, gts)


def textvqa_accuracy(pred: str, gts: Sequence[str]) -> float:
    """TextVQA / m4c: EvalAI-normalise the prediction and every human answer, then the soft score."""
    return leave_one_out_score(evalai_normalize(pred), [evalai_normalize(g) for g in gts])
