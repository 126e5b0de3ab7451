"""Which stages may follow which, checked at submission (torch-free).

Most methods hand the next stage an ordinary float model. A few hand on a model that is already in its final,
deployable number format; training or re-quantizing it would undo that format, so they must come last.
"""

from __future__ import annotations

from compression.specs.registry import BY_NAME

# method -> why nothing can follow it
FINAL_STAGES = {name: declaration.final for name, declaration in BY_NAME.items() if declaration.final}


def order_problems(methods: list[str]) -> list[str]:
    problems = []
    for index, method in enumerate(methods[:-1]):
        if method in FINAL_STAGES:
            following = methods[index + 1]
            problems.append(f"stage {index + 1} ({following}) cannot follow stage {index} ({method}): "
                            f"{FINAL_STAGES[method]}; make {method} the last stage")
    return problems
