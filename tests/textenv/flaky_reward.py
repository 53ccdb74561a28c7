"""A reward that fails on chosen calls: what the transactional-step tests of the single and batched env share."""


class FlakyReward:
    """Raises ``ConnectionError`` on chosen calls (by call number, from 1) and scores ``len(completion)`` otherwise."""

    def __init__(self, fail_on):
        self.fail_on, self.calls = set(fail_on), 0

    def __call__(self, prompts, completions):
        self.calls += 1
        if self.calls in self.fail_on:
            raise ConnectionError("reward server down")
        return [float(len(c)) for c in completions]
