"""The page's teach request with a name the anchor file lacks, on a bundle that carries the text encoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server, start_server, wait_for

from edgecvm.device.new_concepts import new_concepts_path
from edgecvm.serve.access import AccessPolicy


@pytest.fixture(scope="module")
def encoder_server(encoder_bundle: Path, samples_dir: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Server]:
    """The sample's lemons, looped, behind a local server whose bundle carries the text encoder."""
    yield from start_server(encoder_bundle, str(samples_dir / "val" / "lemon"), tmp_path_factory.mktemp("state"),
                            AccessPolicy(None, loopback=True, max_body_bytes=256 * 1024), "127.0.0.1", loop=True)


def test_a_new_name_is_embedded_then_recorded(encoder_server: Server) -> None:
    status, body = encoder_server.request("POST", "/api/teach", {"concept": "Garden  gnome", "frames": 5})
    assert status == 200 and body["recording"]["concept"] == "Garden gnome", body
    assert encoder_server.request("GET", "/api/concepts")[1]["vocabulary_size"] == 201
    completion = encoder_server.request("GET", "/api/vocabulary?q=gnom")[1]
    assert completion["matches"] == ["Garden gnome"] and completion["vocabulary_size"] == 201
    wait_for(lambda: {"name": "Garden gnome", "examples": 5} in encoder_server.request("GET", "/api/concepts")[1]["known"],
             what="the five recorded frames")
    assert new_concepts_path(encoder_server.session.loop.checkpointer.state_dir).is_file()
    status, body = encoder_server.request("POST", "/api/teach", {"concept": "garden gnome", "frames": 1})
    assert status == 200 and body["recording"]["concept"] == "Garden gnome"  # known now, in any case
