"""One name per concept (issue 11): the old spellings still work for one minor version, with a
DeprecationWarning that names the new one, and give the same values."""
import warnings

import pytest

import reactio
from reactio import errors, threaded

from support.reactors import EchoReactor
from support.runtime import listen_factory, pump_until
from support.sockets import raw_client


def test_get_cmd_sender_is_a_deprecated_spelling_of_cmd_sender(rt):
    with pytest.warns(DeprecationWarning, match="rt.cmd_sender"):
        assert rt.get_cmd_sender() is rt.cmd_sender


def test_reader_and_sender_old_names_warn_and_agree(rt):
    seen = {}

    class Probe(EchoReactor):
        def on_connected(self, ctx, listener_id):
            seen["ctx"] = ctx

    lid, port = listen_factory(rt, Probe, recv_buffer_min_size=2048)
    client = raw_client(port)
    pump_until(rt, lambda: "ctx" in seen)
    ctx = seen["ctx"]
    assert ctx.reader.recv_buffer_min_size == 2048
    with pytest.warns(DeprecationWarning, match="recv_buffer_min_size"):
        assert ctx.reader.min_reserve == 2048
    with pytest.warns(DeprecationWarning, match="send_queue_size"):
        assert ctx.sender.queued == ctx.send_queue_size == 0
    client.close()


def test_duplicate_reactor_name_error_lives_with_the_other_errors():
    assert threaded.DuplicateReactorNameError is errors.DuplicateReactorNameError
    assert reactio.DuplicateReactorNameError is errors.DuplicateReactorNameError
    assert issubclass(errors.DuplicateReactorNameError, errors.ReactioError)


def test_reader_and_sender_are_made_by_the_runtime_constructing_one_warns(rt):
    with pytest.warns(DeprecationWarning, match="DispatchContext.reader"):
        reader = reactio.MsgReader(64, 1024)
    assert (reader.recv_buffer_min_size, reader.max_msg_size) == (64, 1024)
    with pytest.warns(DeprecationWarning, match="DispatchContext.sender"):
        sender = reactio.MsgSender(100, 50, 10)
    assert (sender.max_send_queue, sender.high_water, sender.low_water) == (100, 50, 10)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="low_water"):
        reactio.MsgSender(100, 10, 50)
    # the runtime makes its streams' readers and senders without the warning
    seen = {}

    class Probe(EchoReactor):
        def on_connected(self, ctx, listener_id):
            seen["ctx"] = ctx

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        lid, port = listen_factory(rt, Probe, recv_buffer_min_size=512)
        client = raw_client(port)
        pump_until(rt, lambda: "ctx" in seen)
    assert seen["ctx"].reader.recv_buffer_min_size == 512
    client.close()
