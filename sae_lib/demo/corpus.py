"""A generated corpus of short stories over planted topics: known concepts for an SAE to find.

Every topic has its own vocabulary (places, things, actions, qualities); all topics share the
names, function words and sentence frames. A story stays on one topic from its first sentence to
its last, so a model that predicts well must track the topic, and an SAE on its activations has a
reason to carve out one direction per topic. Deterministic from the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TOPICS: dict[str, dict[str, list[str]]] = {
    "ocean": {
        "places": ["harbor", "beach", "reef", "lighthouse", "island"],
        "things": ["ship", "whale", "wave", "sail", "anchor", "dolphin", "shell", "tide", "crab", "boat"],
        "actions": ["sailed", "swam", "dived", "floated", "drifted", "splashed"],
        "qualities": ["salty", "blue", "deep", "sandy"],
    },
    "space": {
        "places": ["launchpad", "observatory", "station", "crater", "orbit"],
        "things": ["rocket", "planet", "comet", "astronaut", "telescope", "galaxy", "moon", "satellite", "star", "asteroid"],
        "actions": ["launched", "orbited", "landed", "glowed", "exploded", "zoomed"],
        "qualities": ["cosmic", "distant", "lunar", "weightless"],
    },
    "cooking": {
        "places": ["kitchen", "bakery", "restaurant", "pantry", "oven"],
        "things": ["soup", "bread", "onion", "pepper", "butter", "pie", "garlic", "pasta", "spoon", "recipe"],
        "actions": ["baked", "stirred", "chopped", "fried", "tasted", "seasoned"],
        "qualities": ["delicious", "spicy", "crispy", "sweet"],
    },
    "music": {
        "places": ["concert", "studio", "theater", "stage", "choir"],
        "things": ["guitar", "piano", "drum", "melody", "violin", "song", "rhythm", "chord", "trumpet", "band"],
        "actions": ["played", "sang", "strummed", "hummed", "rehearsed", "composed"],
        "qualities": ["loud", "harmonic", "musical", "catchy"],
    },
    "forest": {
        "places": ["woods", "clearing", "trail", "campsite", "valley"],
        "things": ["oak", "fox", "owl", "mushroom", "pine", "deer", "moss", "fern", "squirrel", "branch"],
        "actions": ["climbed", "hiked", "rustled", "gathered", "wandered", "nested"],
        "qualities": ["green", "leafy", "wild", "shady"],
    },
    "sports": {
        "places": ["stadium", "field", "court", "gym", "arena"],
        "things": ["ball", "goal", "coach", "team", "referee", "match", "racket", "trophy", "score", "helmet"],
        "actions": ["kicked", "scored", "tackled", "sprinted", "passed", "trained"],
        "qualities": ["athletic", "fast", "winning", "fierce"],
    },
    "medicine": {
        "places": ["hospital", "clinic", "pharmacy", "ward", "lab"],
        "things": ["doctor", "nurse", "patient", "fever", "pill", "bandage", "surgery", "vaccine", "wound", "medicine"],
        "actions": ["healed", "treated", "examined", "diagnosed", "prescribed", "bandaged"],
        "qualities": ["sterile", "healthy", "sick", "medical"],
    },
    "computers": {
        "places": ["office", "server", "network", "desktop", "database"],
        "things": ["laptop", "keyboard", "program", "bug", "screen", "code", "robot", "password", "software", "chip"],
        "actions": ["typed", "coded", "debugged", "compiled", "crashed", "uploaded"],
        "qualities": ["digital", "binary", "virtual", "wireless"],
    },
    "farm": {
        "places": ["barn", "meadow", "orchard", "stable", "pasture"],
        "things": ["cow", "tractor", "hay", "chicken", "pig", "wheat", "sheep", "horse", "egg", "corn"],
        "actions": ["plowed", "harvested", "milked", "planted", "fed", "herded"],
        "qualities": ["muddy", "rural", "golden", "ripe"],
    },
    "castle": {
        "places": ["castle", "tower", "throne", "dungeon", "kingdom"],
        "things": ["knight", "dragon", "king", "queen", "sword", "shield", "crown", "wizard", "armor", "banner"],
        "actions": ["guarded", "conquered", "ruled", "battled", "crowned", "knighted"],
        "qualities": ["royal", "ancient", "noble", "brave"],
    },
}
"""Topic -> its own words by role. No word belongs to two topics."""

NAMES = ["Anna", "Ben", "Maya", "Tom", "Lena", "Omar", "Sara", "Leo", "Nina", "Sam", "Ivy", "Max"]
FEELINGS = ["happy", "tired", "curious", "proud", "calm", "excited", "nervous", "quiet"]
TIMES = ["In the morning", "At noon", "Later that day", "In the evening", "After a while", "Soon"]

# Shared sentence frames; {P} place, {T}/{U} things, {A} action, {Q} quality, {N} name, {F} feeling.
OPENINGS = [
    "{N} went to the {P}.",
    "One day {N} visited the {P}.",
    "{N} walked to the {Q} {P}.",
]
FRAMES = [
    "There, {N} saw a {Q} {T}.",
    "The {T} {A} near the {U}.",
    "{W}, the {T} {A} by the {P}.",
    "{N} felt {F} and watched the {T}.",
    "It was a {Q} day at the {P}.",
    "Everyone {A} with the {T} and smiled.",
    "A {Q} {T} and a {U} were at the {P}.",
    "{N} found the {T} under the {U}.",
    "Then the {U} {A} again.",
]
ENDINGS = [
    "At the end of the day, {N} left the {P} with the {T}.",
    "{N} would never forget the {Q} {T}.",
    "That night, {N} dreamed of the {P}.",
]


@dataclass(frozen=True)
class Story:
    text: str
    """The story, a few sentences on one topic."""
    topic: str
    """Its planted topic, a key of ``TOPICS``."""


@dataclass(frozen=True)
class Corpus:
    train: list[Story]
    heldout: list[Story]
    """Generated from a different stream than ``train``: measures generalisation, feeds the index."""


def topic_words(topic: str) -> set[str]:
    """All of a topic's own words (lowercase)."""
    return {w for words in TOPICS[topic].values() for w in words}


def word_topic() -> dict[str, str]:
    """Word -> the topic that owns it."""
    return {w: t for t in TOPICS for w in topic_words(t)}


def _story(rng: random.Random, topic: str) -> str:
    vocab = TOPICS[topic]

    def fill(frame: str) -> str:
        t, u = rng.sample(vocab["things"], 2)
        return frame.format(
            N=name,
            P=rng.choice(vocab["places"]),
            T=t,
            U=u,
            A=rng.choice(vocab["actions"]),
            Q=rng.choice(vocab["qualities"]),
            F=rng.choice(FEELINGS),
            W=rng.choice(TIMES),
        )

    name = rng.choice(NAMES)
    sentences = [fill(rng.choice(OPENINGS))]
    sentences += [fill(f) for f in rng.sample(FRAMES, rng.randint(3, 5))]
    sentences.append(fill(rng.choice(ENDINGS)))
    return " ".join(sentences)


def generate_corpus(seed: int = 0, n_train: int = 6000, n_heldout: int = 600) -> Corpus:
    """``n_train`` + ``n_heldout`` stories, topics uniform, deterministic from ``seed``."""
    topics = sorted(TOPICS)

    def stories(rng: random.Random, n: int) -> list[Story]:
        out = []
        for _ in range(n):
            topic = rng.choice(topics)
            out.append(Story(_story(rng, topic), topic))
        return out

    # Separate streams: the held-out split does not shift when n_train changes.
    return Corpus(
        train=stories(random.Random(f"{seed}-train"), n_train),
        heldout=stories(random.Random(f"{seed}-heldout"), n_heldout),
    )


def words_of(text: str) -> list[str]:
    """Lowercase words of ``text``, punctuation stripped."""
    return [w.strip(".,!?;:\"'()").lower() for w in text.split() if w.strip(".,!?;:\"'()")]


def topic_share(text: str, topic: str) -> float:
    """Fraction of the words of ``text`` that belong to ``topic``'s own vocabulary."""
    words = words_of(text)
    own = topic_words(topic)
    return sum(w in own for w in words) / max(1, len(words))


def dominant_topic(text: str) -> str | None:
    """The topic owning most of the topic words in ``text`` (None when it has none)."""
    owner = word_topic()
    counts: dict[str, int] = {}
    for w in words_of(text):
        if w in owner:
            counts[owner[w]] = counts.get(owner[w], 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None
