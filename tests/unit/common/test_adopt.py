"""common/adopt.py: from what stands behind the alias, the steps that finish the adoption.

Pure: the states are built by hand the way gather() reads them (the integration tests
in tests/integration/test_index_adopt.py run the same plans against the real node).
"""

from __future__ import annotations

from searchsync.common.adopt import (
    IndexFacts,
    State,
    Step,
    Verdict,
    describe,
    facts_from_settings,
    plan,
)
from searchsync.common.index import Layout

FULL = (Step.BLOCK_SOURCE, Step.CLONE, Step.WAIT, Step.VERIFY, Step.SWAP, Step.UNBLOCK)


def concrete(*others: IndexFacts, blocked: bool = False, aliases: dict[str, dict[str, object]]
             | None = None) -> State:  # fmt: skip
    source = IndexFacts("orders", "uuid-src", write_blocked=blocked)
    indexes = {facts.name: facts for facts in (source, *others)}
    return State(Layout("orders", concrete=True), indexes, aliases or {})


def clone_of_source(name: str = "orders_v1", *, blocked: bool = True) -> IndexFacts:
    return IndexFacts(name, f"uuid-{name}", blocked, "uuid-src", "orders")


def test_facts_from_flat_settings() -> None:
    response = {
        "orders": {"settings": {"index.uuid": "u1", "index.blocks.write": "true"}},
        "orders_v1": {"settings": {
            "index.uuid": "u2", "index.blocks.write": "true",
            "index.resize.source.uuid": "u1", "index.resize.source.name": "orders",
        }},
        "orders_v0": {"settings": {"index.uuid": "u3"}},
    }  # fmt: skip
    facts = facts_from_settings(response)
    assert facts["orders"] == IndexFacts("orders", "u1", True)
    assert facts["orders_v1"] == IndexFacts("orders_v1", "u2", True, "u1", "orders")
    assert facts["orders_v0"].write_blocked is False


def test_a_fresh_concrete_index_gets_every_step_and_generation_1() -> None:
    the_plan = plan(concrete())
    assert the_plan.verdict is Verdict.RUN and the_plan.outcome == "adopted"
    assert the_plan.steps == FULL
    assert the_plan.target == "orders_v1"


def test_the_next_generation_skips_every_existing_one() -> None:
    leftovers = (IndexFacts("orders_v2", "a", False), IndexFacts("orders_v7", "b", False))
    assert plan(concrete(*leftovers)).target == "orders_v8"


def test_resumes_after_the_block() -> None:
    the_plan = plan(concrete(blocked=True))
    assert the_plan.steps == FULL[1:] and the_plan.target == "orders_v1"


def test_resumes_after_the_clone_whatever_its_generation() -> None:
    state = concrete(clone_of_source("orders_v3"), IndexFacts("orders_v4", "x", False),
                     blocked=True)  # fmt: skip
    the_plan = plan(state)
    assert the_plan.steps == (Step.WAIT, Step.VERIFY, Step.SWAP, Step.UNBLOCK)
    assert the_plan.target == "orders_v3"


def test_a_clone_of_a_source_writable_again_is_refused() -> None:
    the_plan = plan(concrete(clone_of_source(), blocked=False))
    assert the_plan.verdict is Verdict.REFUSED
    assert "orders accepts writes again" in the_plan.message
    assert "curl -X DELETE /orders_v1" in the_plan.message


def test_two_clones_are_refused() -> None:
    the_plan = plan(concrete(clone_of_source("orders_v1"), clone_of_source("orders_v2"),
                             blocked=True))  # fmt: skip
    assert the_plan.verdict is Verdict.REFUSED
    assert "several clones (orders_v1, orders_v2)" in the_plan.message


def test_other_aliases_of_the_concrete_index_move_with_it() -> None:
    aliases: dict[str, dict[str, object]] = {"orders_read": {"filter": {"term": {"a": 1}}}}
    the_plan = plan(concrete(aliases=aliases))
    assert the_plan.carried_aliases == aliases
    assert any("(is_write_index: true); its other aliases (orders_read) move to orders_v1 too"
               in line
               for line in describe(the_plan))  # fmt: skip


def test_write_index_option_on_a_concrete_index_is_refused() -> None:
    the_plan = plan(concrete(), write_index_name="orders_v1")
    assert the_plan.verdict is Verdict.REFUSED and "without it" in the_plan.message


def test_nothing_named_like_the_alias() -> None:
    the_plan = plan(State(Layout("orders")))
    assert the_plan.verdict is Verdict.REFUSED and the_plan.outcome == "nothing_to_adopt"
    assert "searchsync index create" in the_plan.message


def alias_state(members: dict[str, bool | None], *facts: IndexFacts) -> State:
    return State(Layout("orders", members=members), {f.name: f for f in facts})


def test_an_alias_with_a_write_index_has_nothing_to_adopt() -> None:
    the_plan = plan(alias_state({"orders_v1": None}, IndexFacts("orders_v1", "u", False)))
    assert the_plan.verdict is Verdict.NOTHING and the_plan.outcome == "already_an_alias"
    assert the_plan.target == "orders_v1" and the_plan.steps == ()
    assert "orders is already an alias" in the_plan.message


def test_a_swapped_clone_still_blocked_is_unblocked() -> None:
    the_plan = plan(alias_state({"orders_v1": True}, clone_of_source()))
    assert the_plan.verdict is Verdict.RUN and the_plan.steps == (Step.UNBLOCK,)
    assert the_plan.target == "orders_v1"


def test_an_index_blocked_for_another_reason_is_left_alone() -> None:
    blocked = IndexFacts("orders_v1", "u", True)  # not a clone of a concrete "orders"
    assert plan(alias_state({"orders_v1": True}, blocked)).verdict is Verdict.NOTHING


def test_an_alias_without_a_write_index_needs_the_option() -> None:
    members: dict[str, bool | None] = {"orders_v1": None, "orders_v2": None}
    the_plan = plan(alias_state(members))
    assert the_plan.verdict is Verdict.REFUSED
    assert "--write-index orders_v2" in the_plan.message

    the_plan = plan(alias_state(members), write_index_name="orders_v1")
    assert the_plan.verdict is Verdict.RUN and the_plan.outcome == "write_index_set"
    assert the_plan.steps == (Step.MARK_WRITE_INDEX,) and the_plan.target == "orders_v1"
    assert describe(the_plan) == [
        "  1. mark orders_v1 as the write index of the alias orders (is_write_index: true)"
    ]


def test_write_index_option_never_moves_a_working_alias() -> None:
    members: dict[str, bool | None] = {"orders_v1": None, "orders_v2": True}
    the_plan = plan(alias_state(members), write_index_name="orders_v1")
    assert the_plan.verdict is Verdict.REFUSED and "already writes to orders_v2" in the_plan.message
    same = plan(alias_state(members), write_index_name="orders_v2")
    assert same.verdict is Verdict.NOTHING
    other = plan(alias_state(members), write_index_name="elsewhere")
    assert other.verdict is Verdict.REFUSED and "is not behind the alias" in other.message


def test_describe_numbers_the_steps_and_warns_about_tombstones() -> None:
    lines = describe(plan(concrete()))
    assert lines[0].startswith("  1. block writes on orders (index.blocks.write=true)")
    assert lines[1].startswith("  2. clone orders to orders_v1")
    assert lines[4].startswith("  5. in one _aliases request: delete the concrete index orders")
    assert lines[5] == "  6. remove the write block orders_v1 was cloned with"
    assert "Delete tombstones are not cloned" in lines[6]
