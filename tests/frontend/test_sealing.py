"""Sealed values: open only with their key and for their context, and the key lives outside the store."""

from __future__ import annotations

import base64
import stat
import threading
from pathlib import Path

import pytest

from frontend.sealing import KEY_FILE, Sealer, SealError, kept_key, new_key
from frontend.settings import Settings


def sealer() -> Sealer:
    return Sealer(base64.b64decode(new_key()))


def test_a_sealed_value_opens_for_its_context_and_reveals_nothing_in_its_text() -> None:
    box = sealer()
    sealed = box.seal(b"a red fox in the snow", "job:1:request")
    assert box.unseal(sealed, "job:1:request") == b"a red fox in the snow"
    assert "fox" not in sealed
    assert sealed.isascii()
    # A fresh nonce each time: equal plaintexts do not show as equal values.
    assert box.seal(b"a red fox in the snow", "job:1:request") != sealed


def test_a_value_moved_to_another_row_or_purpose_is_refused() -> None:
    box = sealer()
    sealed = box.seal(b"whsec_secret", "webhook-secret:account-a")
    with pytest.raises(SealError, match="another context"):
        box.unseal(sealed, "webhook-secret:account-b")
    with pytest.raises(SealError, match="another context"):
        box.unseal(sealed, "job:account-a:result")


def test_a_changed_byte_is_refused_not_read() -> None:
    box = sealer()
    sealed = box.seal(b"result", "job:1:result")
    raw = bytearray(base64.urlsafe_b64decode(sealed[3:]))
    raw[-1] ^= 1
    with pytest.raises(SealError):
        box.unseal("s1." + base64.urlsafe_b64encode(bytes(raw)).decode(), "job:1:result")
    with pytest.raises(SealError, match="not a sealed value"):
        box.unseal("result", "job:1:result")


def test_another_key_cannot_open_and_says_so() -> None:
    sealed = sealer().seal(b"result", "job:1:result")
    with pytest.raises(SealError, match="another key"):
        sealer().unseal(sealed, "job:1:result")


def test_the_default_key_file_lies_beside_the_store_owner_only_and_is_kept(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    sealed = Sealer.from_settings(settings).seal(b"result", "job:1:result")
    key_file = tmp_path / "state" / KEY_FILE
    assert key_file.parent == Path(settings.store_location).parent
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The next start reads the same key.
    assert Sealer.from_settings(settings).unseal(sealed, "job:1:result") == b"result"


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(kept_key(tmp_path / KEY_FILE))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1
    assert [path.name for path in tmp_path.iterdir()] == [KEY_FILE]


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    kept_key(tmp_path / KEY_FILE)
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        kept_key(tmp_path / KEY_FILE)


def test_the_operators_key_is_used_in_standard_or_url_safe_base64(tmp_path: Path) -> None:
    key = new_key()
    standard = Settings(state_dir=tmp_path, secrets_key=key)
    url_safe = Settings(state_dir=tmp_path, secrets_key=key.replace("+", "-").replace("/", "_"))
    sealed = Sealer.from_settings(standard).seal(b"result", "job:1:result")
    assert Sealer.from_settings(url_safe).unseal(sealed, "job:1:result") == b"result"
    assert not (tmp_path / KEY_FILE).exists()
    with pytest.raises(ValueError, match="holds 16 bytes"):
        Sealer.from_settings(Settings(secrets_key=base64.b64encode(bytes(16)).decode()))


def test_replicas_sharing_postgresql_must_be_given_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="IMAGEGEN_SECRETS_KEY is required"):
        Sealer.from_settings(Settings(state_dir=tmp_path, store="postgresql://db/imagegen"))
