from services.kit import apikeys


def test_minted_keys_parse_and_verify() -> None:
    key = apikeys.mint()
    parsed = apikeys.parse(key.secret)
    assert parsed is not None
    key_id, secret = parsed
    assert key_id == key.key_id
    assert apikeys.verify(secret, key.secret_hash)
    assert not apikeys.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B"), key.secret_hash)
    assert secret not in key.secret_hash.hex()
    assert key.display_prefix == key.secret[:12]


def test_keys_are_unique_and_platform_key_is_reserved() -> None:
    assert len({apikeys.mint().key_id for _ in range(100)}) == 100
    platform = apikeys.mint_platform()
    assert apikeys.parse(platform.secret) == (apikeys.PLATFORM_KEY_ID, platform.secret[21:])


def test_garbage_is_not_a_key() -> None:
    for text in ("", "smk_", "Bearer x", "smk_short_secret", "xyz_0123456789abcdef_" + "a" * 43):
        assert apikeys.parse(text) is None
