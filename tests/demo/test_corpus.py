from sae_lib.demo.corpus import (
    NAMES,
    TOPICS,
    dominant_topic,
    generate_corpus,
    topic_share,
    topic_words,
    word_topic,
)


def test_deterministic_from_seed_and_seed_matters():
    a, b, c = generate_corpus(3, 50, 10), generate_corpus(3, 50, 10), generate_corpus(4, 50, 10)
    assert a == b
    assert [s.text for s in a.train] != [s.text for s in c.train]


def test_heldout_split_does_not_depend_on_train_size_and_differs_from_train():
    small, big = generate_corpus(0, 10, 20), generate_corpus(0, 500, 20)
    assert small.heldout == big.heldout
    assert not {s.text for s in big.heldout} & {s.text for s in big.train}


def test_at_least_eight_topics_with_disjoint_vocabularies():
    assert len(TOPICS) >= 8
    owners = word_topic()
    assert sum(len(topic_words(t)) for t in TOPICS) == len(owners)  # no word in two topics
    assert not set(NAMES) & {w.capitalize() for w in owners}


def test_each_story_stays_on_its_topic_and_topics_are_balanced():
    corpus = generate_corpus(0, 2000, 10)
    counts = {t: 0 for t in TOPICS}
    for story in corpus.train[:300]:
        assert dominant_topic(story.text) == story.topic
        foreign = [w for w, t in word_topic().items() if t != story.topic]
        assert not any(f" {w} " in f" {story.text.lower()} " for w in foreign)
        assert topic_share(story.text, story.topic) > 0.1
    for story in corpus.train:
        counts[story.topic] += 1
    assert min(counts.values()) > 0.7 * len(corpus.train) / len(TOPICS)


def test_topic_share_counts_words():
    assert topic_share("The ship sailed.", "ocean") == 2 / 3
    assert topic_share("The ship sailed.", "space") == 0
    assert dominant_topic("Nothing here at all.") is None
