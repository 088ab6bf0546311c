#!/usr/bin/env python3
"""Candidate facts for stories260K (a TinyStories model: it knows story completions, not world
facts), for the AMIG-vs-IG comparison on a real model without a post-FFN norm (issue 18, item 8).

Every prompt is written with every candidate answer of its relation; `knprobe localize --screen
rank:1 --screen-only` then keeps the (prompt, answer) pairs whose every answer token is the
model's top-1, i.e. the completions the model "knows". Deterministic: no randomness here, the
screening's sampling and caps are seeded.

Usage: python3 tools/make_stories_facts.py OUT.jsonl
"""
import itertools
import json
import sys

NAMES = ["Lily", "Tim", "Max", "Tom", "Ben", "Sue", "Sam", "Anna", "Spot", "Mia", "Jack", "Lucy",
         "Bob", "Sara", "Timmy", "Billy", "Mary", "Jane", "Kitty", "Sally"]

RELATIONS = {
    # relation: (prompt templates, candidate answers)
    "name": (
        ["%s, there was a %s %s named" % (o, a, w)
         for o, a, w in itertools.product(
             ["Once upon a time", "One day", "Long ago"],
             ["little", "big", "happy", "kind", "small", "nice"],
             ["girl", "boy", "dog", "cat", "bird", "bear", "bunny", "fish", "frog", "duck"])],
        NAMES),
    "place": (
        [t % n for t, n in itertools.product(
            ["One day, %s went to the", "%s liked to play in the", "%s ran to the",
             "%s and mom went to the", "%s looked up at the", "%s jumped into the"], NAMES)],
        ["park", "store", "beach", "garden", "house", "forest", "zoo", "pond", "kitchen",
         "school", "tree", "sky", "water", "river", "sun", "room"]),
    "feeling": (
        [t % n for t, n in itertools.product(
            ["%s was very", "%s felt very", "After that, %s was so"], NAMES)],
        ["happy", "sad", "excited", "scared", "angry", "tired", "proud", "sorry"]),
    "object": (
        [t % n for t, n in itertools.product(
            ["%s wanted to play with the", "%s saw a big", "%s found a shiny"], NAMES)],
        ["ball", "toy", "box", "car", "doll", "rock", "tree", "dog", "cat", "bird", "stick",
         "apple", "flower"]),
}


def main(out):
    n = 0
    with open(out, "w") as f:
        for rel, (prompts, answers) in RELATIONS.items():
            for i, p in enumerate(prompts):
                for a in answers:
                    fact = {"id": "%s:%d:%s" % (rel, i, a), "relation": rel,
                            "prompts": {"en": p}, "answers": {"en": " " + a}}
                    f.write(json.dumps(fact) + "\n")
                    n += 1
    print("wrote %d candidate facts to %s" % (n, out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
