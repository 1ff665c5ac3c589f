"""Password hashing for admin users: argon2id through argon2-cffi.

A hash costs about 0.16 s of CPU on purpose, so Twisted code must call these through
`deferToThread` (never on the reactor thread); the CLI calls them directly.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()          # argon2id with the library's current recommended parameters

MIN_LENGTH = 12


def new_password_problem(password: str) -> str:
    """Why a new password is refused ('' = fine): the one rule for mirrorctl and the web."""
    if len(password) < MIN_LENGTH:
        return f"at least {MIN_LENGTH} characters, please"
    return ""


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("an empty password is not allowed")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when password matches; False for a mismatch or a malformed stored hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the stored hash uses older parameters: rehash it after a successful login."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
