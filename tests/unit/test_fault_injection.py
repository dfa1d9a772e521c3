"""The fault injector: which requests a rule hits, how often, and what counts as a write."""

from __future__ import annotations

from orderflow.sandbox.faults import FaultInjector, FaultKind, FaultRule, is_mutation


def test_graphql_queries_are_reads_and_mutations_are_writes() -> None:
    assert not is_mutation("POST", b'{"query": "query { order(id: 1) { id } }"}')
    assert not is_mutation("POST", b'{"query": "  { shop { name } }"}')
    assert is_mutation(
        "POST", b'{"query": "mutation($f: FulfillmentInput!) { fulfillmentCreate(fulfillment: $f) { x } }"}'
    )
    assert is_mutation("PUT", b"{}")
    assert not is_mutation("GET", b"")


def test_a_rule_matches_by_system_method_and_path_glob() -> None:
    injector = FaultInjector()
    injector.add(FaultRule(system="carrier", method="POST", path="/v2/shipments/*/buy", kind=FaultKind.ERROR))
    assert injector.decide("carrier", "POST", "/v2/shipments/shp_1/buy", b"{}").rule is not None
    assert injector.decide("carrier", "POST", "/v2/shipments", b"{}").rule is None
    assert injector.decide("carrier", "GET", "/v2/shipments/shp_1/buy", b"").rule is None
    assert injector.decide("wms", "POST", "/v2/shipments/shp_1/buy", b"{}").rule is None


def test_times_limits_how_often_a_rule_fires() -> None:
    injector = FaultInjector()
    injector.add(FaultRule(kind=FaultKind.THROTTLE, times=2))
    hits = [injector.decide("wms", "GET", "/x", b"").rule is not None for _ in range(5)]
    assert hits == [True, True, False, False, False]
    assert injector.rules[0].fired == 2


def test_rate_fires_about_that_often_and_reproducibly_for_a_seed() -> None:
    def run() -> list[bool]:
        injector = FaultInjector(seed=3)
        injector.add(FaultRule(kind=FaultKind.ERROR, rate=0.3))
        return [injector.decide("wms", "POST", "/x", b"{}").rule is not None for _ in range(1000)]

    first = run()
    assert 240 <= sum(first) <= 360
    assert run() == first


def test_latencies_add_up_and_the_first_terminal_rule_wins() -> None:
    injector = FaultInjector()
    injector.add(FaultRule(kind=FaultKind.LATENCY, latency_ms=100))
    injector.add(FaultRule(kind=FaultKind.LATENCY, latency_ms=50))
    injector.add(FaultRule(kind=FaultKind.THROTTLE))
    injector.add(FaultRule(kind=FaultKind.ERROR))
    decision = injector.decide("shopify", "POST", "/admin/api/2025-10/graphql.json", b"{}")
    assert decision.latency_ms == 150
    assert decision.rule is not None and decision.rule.kind is FaultKind.THROTTLE


def test_mutating_only_rules_spare_reads() -> None:
    injector = FaultInjector()
    injector.add(FaultRule(kind=FaultKind.TIMEOUT_AFTER_COMMIT, mutating_only=True))
    assert injector.decide("netsuite", "GET", "/services/rest/record/v1/salesOrder/1", b"").rule is None
    assert injector.decide("netsuite", "PUT", "/services/rest/record/v1/salesOrder/eid:X", b"{}").rule is not None


def test_clearing_one_system_keeps_the_others() -> None:
    injector = FaultInjector()
    injector.add(FaultRule(system="wms", kind=FaultKind.ERROR))
    injector.add(FaultRule(system="carrier", kind=FaultKind.ERROR))
    injector.clear("wms")
    assert [r.system for r in injector.rules] == ["carrier"]
    injector.clear()
    assert injector.rules == []


def test_mutating_only_rules_spare_a_systems_read_only_posts() -> None:
    injector = FaultInjector()
    injector.read_only_posts["netsuite"] = ("/services/rest/query/v1/suiteql",)
    injector.add(FaultRule(kind=FaultKind.TIMEOUT_AFTER_COMMIT, mutating_only=True))
    query = b'{"q": "SELECT id FROM item"}'
    assert injector.decide("netsuite", "POST", "/services/rest/query/v1/suiteql", query).rule is None
    assert injector.decide("netsuite", "POST", "/services/rest/record/v1/salesOrder", b"{}").rule is not None
    # Another system's POST on a path that happens to match is still a write.
    assert injector.decide("wms", "POST", "/services/rest/query/v1/suiteql", b"{}").rule is not None
