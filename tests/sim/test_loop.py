"""The event kernel: ordering, ties, cancellation, bounds."""

from meshlearn.sim.loop import EventLoop


def test_events_run_in_time_order_and_ties_in_scheduling_order():
    loop, seen = EventLoop(), []
    for t, tag in [(3.0, "c"), (1.0, "a"), (2.0, "b1"), (2.0, "b2"), (0.5, "z")]:
        loop.call_at(t, seen.append, tag)
    loop.run()
    assert seen == ["z", "a", "b1", "b2", "c"]
    assert loop.now == 3.0


def test_cancelled_events_do_not_run():
    loop, seen = EventLoop(), []
    h = loop.call_at(1.0, seen.append, "x")
    loop.call_at(2.0, seen.append, "y")
    EventLoop.cancel(h)
    loop.run()
    assert seen == ["y"]
    assert loop.events_run == 1


def test_run_until_stops_before_later_events_and_resumes():
    loop, seen = EventLoop(), []
    loop.call_at(1.0, seen.append, 1)
    loop.call_at(5.0, seen.append, 5)
    loop.run(until=3.0)
    assert seen == [1] and loop.now == 3.0
    loop.run()
    assert seen == [1, 5] and loop.now == 5.0


def test_callbacks_can_schedule_more_events_and_past_times_clamp_to_now():
    loop, seen = EventLoop(), []

    def tick(n):
        seen.append((loop.now, n))
        if n < 3:
            loop.call_later(0.5, tick, n + 1)
            loop.call_at(-1.0, seen.append, "past")  # clamps to now, runs after this callback

    loop.call_at(0.0, tick, 0)
    loop.run()
    assert [s for s in seen if s != "past"] == [(0.0, 0), (0.5, 1), (1.0, 2), (1.5, 3)]
    assert seen.count("past") == 3


def test_stop_and_max_events():
    loop, seen = EventLoop(), []
    for i in range(10):
        loop.call_at(float(i), seen.append, i)
    loop.run(max_events=3)
    assert seen == [0, 1, 2]
    loop.call_at(3.5, lambda _: loop.stop())
    loop.run()
    assert seen == [0, 1, 2, 3] and loop.now == 3.5
