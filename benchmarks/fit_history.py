"""How long fitting a long history into the embedded model's context takes (tutor.chat.fit_prompt), outside the server.

    python benchmarks/fit_history.py --pairs 2000     # 2,000 empty user/assistant exchanges before the question

Empty turns cost no characters but a few tokens each, so the character bound let them through; fitting them used to
re-encode the whole conversation once per dropped turn.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.models import EMBEDDED  # noqa: E402
from tutor.chat import build_messages, fit_prompt  # noqa: E402
from tutor.models import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    args = parser.parse_args()
    loaded = load_model(EMBEDDED)
    history = [{"role": role, "content": ""} for _ in range(args.pairs) for role in ("user", "assistant")]
    messages = build_messages([*history, {"role": "user", "content": "What is 2 + 2?"}], "You are a tutor.")
    started = time.perf_counter()
    ids = fit_prompt(loaded, messages, args.max_new_tokens)
    print(f"{args.pairs} empty pairs: fit_prompt {time.perf_counter() - started:.2f} s, {len(ids)} tokens kept")


if __name__ == "__main__":
    main()
