"""Everything a student touches: models, streamed replies, reasoning and LaTeX display, answers, evaluation."""
