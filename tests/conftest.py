"""Test-session settings: exported ONNX graphs are cached in a temporary folder, never in the user's cache."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _graph_cache_in_a_temporary_folder(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TTS_CACHE", str(tmp_path_factory.mktemp("tts_cache")))
        yield
