"""``keel stream``'s refusals: one line on stderr, a non-zero exit, nothing read."""

from __future__ import annotations

import pytest

from _support.network import free_port

MODEL = "models:/cancer@champion"
REDIS = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--source", "http://127.0.0.1/events", "--sink", f"{REDIS}?stream=out"],
            "--source must be a redis://, rediss://, nats:// or tls:// URL",
        ),
        (
            ["--source", REDIS, "--sink", f"{REDIS}?stream=out"],
            f"--source {REDIS} names no stream; add ?stream=<name>",
        ),
        (
            ["--source", f"{REDIS}?stream=events&colour=red", "--sink", f"{REDIS}?stream=out"],
            "unknown parameter 'colour'; redis:// takes claim_idle, field, start, stream",
        ),
        (
            ["--source", f"{REDIS}?stream=events&start=5", "--sink", f"{REDIS}?stream=out"],
            "start must be 0 (the whole stream) or $ (new entries), got '5'",
        ),
        (
            ["--source", f"{REDIS}?stream=events&claim_idle=-1", "--sink", f"{REDIS}?stream=out"],
            "claim_idle must be a number > 0, got '-1'",
        ),
        (
            ["--source", f"{REDIS}?stream=events", "--sink", "nats://127.0.0.1:4222?subject=a.*"],
            "a subject to publish to has no wildcards",
        ),
        (
            ["--source", "nats://127.0.0.1:4222", "--sink", f"{REDIS}?stream=out"],
            "names no subject; add ?subject=<subject>",
        ),
        (
            [
                "--source",
                "nats://127.0.0.1:4222?subject=events",
                "--sink",
                f"{REDIS}?stream=out",
                "--consumer",
                "c1",
            ],
            "--consumer names a consumer of a Redis group",
        ),
        (
            ["--source", f"{REDIS}?stream=events", "--sink", f"{REDIS}?stream=out", "--batch", "0"],
            "--batch must be at least 1, got 0",
        ),
        (
            ["--source", f"{REDIS}?stream=e", "--sink", f"{REDIS}?stream=o", "--runtime", "fast"],
            "--runtime must be one of native, auto, onnx, treelite, got 'fast'",
        ),
    ],
)
def test_bad_urls_and_flags_get_one_line_and_a_non_zero_exit(sqlite_env, run_keel, args, message):
    done = run_keel("stream", MODEL, *args, settings=sqlite_env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert message in done.stderr
    assert done.stderr.startswith("error:") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_a_broker_that_is_not_there_fails_at_start(sqlite_env, run_keel):
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = run_keel(
        "stream", MODEL, "--source", f"{url}?stream=events", "--sink", f"{url}?stream=out",
        settings=sqlite_env,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"Redis at {url}?stream=events cannot be reached" in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_deployment_that_does_not_exist_is_named(sqlite_env, run_keel):
    done = run_keel(
        "stream", "nowhere", "--source", f"{REDIS}?stream=e", "--sink", f"{REDIS}?stream=o",
        settings=sqlite_env,
    )  # fmt: skip
    assert done.returncode == 1
    assert "nowhere" in done.stderr and done.stderr.count("\n") == 1


def test_a_password_in_a_url_is_never_printed(sqlite_env, run_keel):
    done = run_keel(
        "stream", MODEL, "--source", "redis://:hunter2@127.0.0.1:6379/0",
        "--sink", f"{REDIS}?stream=o", settings=sqlite_env,
    )  # fmt: skip
    assert done.returncode == 1
    assert "hunter2" not in done.stderr and "names no stream" in done.stderr
