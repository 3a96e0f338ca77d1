"""Subjects: how the engine finds "this person's records", whatever the stored formatting.

A subject is a name (`customer`, `phone`, `email`, `subscriber`, ...) that a policy maps to its
records in `store.subjects`: directly (a column of the record's table) or through link tables
(`cdrs.subscriber_id -> subscribers.id`, whose `customer_id` is the customer). Holds use it
today; data-subject requests will use the same resolution, so a request finds exactly what a hold
on the same subject protects.

Values are compared in a canonical form, so a hold on `+31600000901` protects a row that stores
`+31 6 00000901`, and one on `LEAD902@EXAMPLE.NL` a row that stores the address in lower case:

- `phone`: E.164 (the `phonenumbers` library, default region NL);
- `email`: trimmed and case-insensitive;
- anything else: a key, compared as the column's type (an integer column matches `17`, ` 17 `).

This module has no SQL: it canonicalises values. The SQL store builds the predicates.
"""

from __future__ import annotations

import re

PHONE_REGION = "NL"
PHONE_SUBJECTS = frozenset({"phone"})
EMAIL_SUBJECTS = frozenset({"email"})
PREFIX_SUBJECT = "prefix"  # object stores: a key prefix
MAX_VALUE_LENGTH = 500


class SubjectValueError(ValueError):
    """A value that cannot be a value of its subject (a phone number with letters, say)."""


def kind_of(subject: str) -> str:
    """`phone`, `email` or `key`: how values of this subject are compared."""
    if subject in PHONE_SUBJECTS:
        return "phone"
    if subject in EMAIL_SUBJECTS:
        return "email"
    return "key"


def canonical_phone(value: str) -> str:
    """E.164 (`+31612345678`). Numbers without a country code are read as Dutch numbers."""
    import phonenumbers

    try:
        number = phonenumbers.parse(value, PHONE_REGION)
    except phonenumbers.NumberParseException:
        raise SubjectValueError("value: not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise SubjectValueError("value: not a possible phone number (too short or too long)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def canonical_email(value: str) -> str:
    address = value.strip().lower()
    if not re.fullmatch(r"[^@\s]+@[^@\s]+", address):
        raise SubjectValueError("value: not an e-mail address")
    return address


def canonical(subject: str, value: str) -> str:
    """The form a hold is stored and matched in. Raises SubjectValueError, whose message never
    quotes the value (it is personal data)."""
    value = value.strip()
    if not value:
        raise SubjectValueError("value: empty")
    if len(value) > MAX_VALUE_LENGTH:
        raise SubjectValueError(f"value: longer than {MAX_VALUE_LENGTH} characters")
    kind = kind_of(subject)
    if kind == "phone":
        return canonical_phone(value)
    if kind == "email":
        return canonical_email(value)
    return value


def canonical_or_none(subject: str, value: str) -> str | None:
    """For values read back from storage (a hold stored before canonical forms existed)."""
    try:
        return canonical(subject, value)
    except SubjectValueError:
        return None


def phone_digits(canonical_value: str) -> str:
    """The digits of the national number, the part every formatting of it keeps in order."""
    import phonenumbers

    return str(phonenumbers.parse(canonical_value, None).national_number)


def stored_phone_candidates_pattern(canonical_value: str) -> str:
    """A LIKE pattern that every stored formatting of the number matches (its national digits
    in order, anything between): the candidates are then canonicalised one by one."""
    return "%" + "%".join(phone_digits(canonical_value)) + "%"
