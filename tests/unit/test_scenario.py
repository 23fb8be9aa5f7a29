from datetime import UTC, datetime

from meterflow.testing.scenario import MALFORMED_KINDS, ScenarioConfig, generate

CFG = ScenarioConfig(
    seed=3, start=datetime(2026, 1, 1, tzinfo=UTC), events=400, allowed_late=3, late=4
)


def test_same_seed_same_stream():
    a, b = generate(CFG), generate(CFG)
    assert a.records == b.records
    assert generate(ScenarioConfig(seed=4, events=400)).records != a.records


def test_truth_accounts_for_every_record():
    sc = generate(CFG)
    kinds = [r.kind for r in sc.records]
    assert kinds.count("accepted") == len(sc.accepted) == 403
    assert kinds.count("duplicate") == sc.duplicates > 0
    assert kinds.count("late") == len(sc.late) == 4
    assert {k: kinds.count(k) for k in MALFORMED_KINDS} == dict(sc.dead_letters)
    assert len({e.event_id for e in sc.accepted + sc.late}) == len(sc.accepted) + len(sc.late)


def test_late_events_are_far_behind_the_first_phase():
    sc = generate(CFG)
    head = max(e.timestamp for e in sc.accepted[: CFG.events])
    assert all(head - e.timestamp > CFG.allowed_lateness for e in sc.late)
    assert all(head - e.timestamp < CFG.allowed_lateness for e in sc.accepted[CFG.events :])


def test_customer_skew_makes_heavy_hitters():
    from collections import Counter

    def shares(skew: float) -> list[float]:
        sc = generate(ScenarioConfig(seed=3, customers=100, events=5000, customer_skew=skew))
        counts = Counter(e.customer_id for e in sc.accepted)
        return [n / len(sc.accepted) for _, n in counts.most_common()]

    uniform, zipf = shares(0.0), shares(1.1)
    assert uniform[0] < 0.05  # 1 % expected
    # Zipf s = 1.1 over 100 customers: the first holds 1 / H(100, 1.1) ~ 22 % of the events
    assert 0.15 < zipf[0] < 0.30
    assert sum(zipf[:10]) > 0.5
