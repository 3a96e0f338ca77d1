"""The demo's telecom database: realistic synthetic data over several years (Faker, nl_NL).

Customers (client organisations) and their subscribers, call detail records, traffic data kept for
lawful interception, VoIP IP logs, support tickets (some still open) and website contact forms
(a few imported without a date: anomalies the engine reports and never deletes). Deterministic
for a given seed and `today`, and works on any SQLAlchemy dialect.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from faker import Faker
from sqlalchemy.dialects import mysql

metadata = sa.MetaData()
# Microseconds everywhere (MariaDB's plain DATETIME would drop them).
Timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("company_name", sa.String(200), nullable=False),
    sa.Column("kvk_number", sa.String(8), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)
subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("full_name", sa.String(200), nullable=False),
    sa.Column("phone", sa.String(40), nullable=False),
    sa.Column("email", sa.String(200), nullable=False),
)
cdrs = sa.Table(
    "cdrs",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("subscriber_id", sa.Integer, nullable=False),
    sa.Column("caller", sa.String(40), nullable=False),
    sa.Column("callee", sa.String(40), nullable=False),
    sa.Column("cell_id", sa.String(20), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False, index=True),
    sa.Column("duration_s", sa.Integer, nullable=False),
)
lawful_intercept_traffic = sa.Table(
    "lawful_intercept_traffic",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("request_ref", sa.String(20), nullable=False),
    sa.Column("channel", sa.String(20), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("destination", sa.String(200), nullable=False),
    sa.Column("event_at", Timestamp, nullable=False, index=True),
)
voip_ip_log = sa.Table(
    "voip_ip_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("subscriber_id", sa.Integer, nullable=False),
    sa.Column("ip_address", sa.String(45), nullable=False),
    sa.Column("user_agent", sa.String(100), nullable=False),
    sa.Column("seen_at", Timestamp, nullable=False, index=True),
)
support_tickets = sa.Table(
    "support_tickets",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # uuid as text: keys need not be integers
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("contact_name", sa.String(200), nullable=False),
    sa.Column("contact_email", sa.String(200), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("opened_at", Timestamp, nullable=False),
    sa.Column("closed_at", Timestamp, nullable=True, index=True),  # NULL: still open
)
contact_forms = sa.Table(
    "contact_forms",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(200), nullable=False),
    sa.Column("phone", sa.String(40), nullable=False),
    sa.Column("company", sa.String(200), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("submitted_at", Timestamp, nullable=True, index=True),
)

# "Until end of service": data kept while the client's contract (or VoIP account) lives.
contracts = sa.Table(
    "contracts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.Integer, nullable=False, index=True),
    sa.Column("service", sa.String(20), nullable=False),  # internet, voip, mobiel
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp, nullable=True),  # NULL: running
)
org_contacts = sa.Table(
    "org_contacts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("phone", sa.String(40), nullable=False),
    sa.Column("email", sa.String(200), nullable=False),
)
service_addresses = sa.Table(
    "service_addresses",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("contract_id", sa.Integer, nullable=False),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("street", sa.String(200), nullable=False),
    sa.Column("postcode", sa.String(10), nullable=False),
    sa.Column("city", sa.String(100), nullable=False),
)
billing_names = sa.Table(
    "billing_names",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("company_name", sa.String(200), nullable=False),
)
internet_lines = sa.Table(
    "internet_lines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("contract_id", sa.Integer, nullable=False),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("service_id", sa.String(20), nullable=False),
    sa.Column("line_id", sa.String(20), nullable=False),
    sa.Column("public_ip", sa.String(45), nullable=False),
)
voip_accounts = sa.Table(
    "voip_accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("phone", sa.String(40), nullable=False),
    sa.Column("email", sa.String(200), nullable=False),
    sa.Column("decommissioned_at", Timestamp, nullable=True),  # NULL: in use
)
mobile_subscriptions = sa.Table(
    "mobile_subscriptions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("contract_id", sa.Integer, nullable=False),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("msisdn", sa.String(40), nullable=False),
    sa.Column("sim_iccid", sa.String(22), nullable=False),
    sa.Column("imei", sa.String(15), nullable=False),
    sa.Column("last_roaming_notice_at", Timestamp, nullable=True),
)

# The customer whose contracts all ended two years ago and who is under a legal hold in the
# demo: its contact persons, addresses and lines survive their window.
HELD_CUSTOMER = 1

# Rows per table at scale 1.0.
VOLUMES = {
    "customers": 60,
    "subscribers": 400,
    "cdrs": 12_000,
    "lawful_intercept_traffic": 1_500,
    "voip_ip_log": 6_000,
    "support_tickets": 1_200,
    "contact_forms": 900,
}
YEARS = 4
UNDATED_CONTACT_FORMS = 3


def _naive_utc(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(tzinfo=None)


def _moment(rng: random.Random, now: datetime, span: timedelta) -> datetime:
    """A moment in the last `span`, busier recently (the business grows)."""
    fraction = rng.random() ** 0.8  # skewed towards 1 = now
    return now - span + span * fraction - timedelta(microseconds=rng.randrange(1_000_000))


def _insert(conn, table: sa.Table, rows: list[dict]) -> None:
    for start in range(0, len(rows), 2_000):
        conn.execute(table.insert(), rows[start : start + 2_000])


def seed_telecom(
    engine: sa.Engine, now: datetime, *, scale: float = 1.0, seed: int = 7
) -> dict[str, int]:
    """Create the demo tables (dropping old ones) and fill them with data up to `now`."""
    rng = random.Random(seed)
    fake = Faker("nl_NL")
    fake.seed_instance(seed)
    size = {name: max(1, int(count * scale)) for name, count in VOLUMES.items()}
    span = timedelta(days=365 * YEARS)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    stamp = _naive_utc if engine.dialect.name != "postgresql" else (lambda value: value)

    customer_rows = [
        {
            "id": i,
            "company_name": fake.company(),
            "kvk_number": f"{rng.randrange(10**7, 10**8)}",
            "created_at": stamp(_moment(rng, now, span)),
        }
        for i in range(1, size["customers"] + 1)
    ]
    subscriber_rows = [
        {
            "id": i,
            "customer_id": rng.randrange(1, size["customers"] + 1),
            "full_name": fake.name(),
            "phone": fake.phone_number(),
            "email": fake.email(),
        }
        for i in range(1, size["subscribers"] + 1)
    ]
    phones = [row["phone"] for row in subscriber_rows]
    cdr_rows = [
        {
            "id": i,
            "subscriber_id": rng.randrange(1, size["subscribers"] + 1),
            "caller": rng.choice(phones),
            "callee": fake.phone_number() if rng.random() < 0.6 else rng.choice(phones),
            "cell_id": f"NL-{rng.randrange(1000, 9999)}-{rng.randrange(100)}",
            "started_at": moment,
            "duration_s": int(rng.expovariate(1 / 180)),
        }
        # ids follow time, as in a real append-only table
        for i, moment in enumerate(
            sorted(stamp(_moment(rng, now, span)) for _ in range(size["cdrs"])), start=1
        )
    ]
    channels = ("e-mail", "telefonie", "internet")
    traffic_rows = []
    for i in range(1, size["lawful_intercept_traffic"] + 1):
        channel = rng.choice(channels)
        source, destination = {
            "e-mail": (fake.email, fake.email),
            "telefonie": (fake.phone_number, fake.phone_number),
            "internet": (fake.ipv4_public, fake.ipv4_public),
        }[channel]
        traffic_rows.append(
            {
                "id": i,
                "request_ref": f"OVV-{rng.randrange(10**5, 10**6)}",
                "channel": channel,
                "source": source(),
                "destination": destination(),
                "event_at": stamp(_moment(rng, now, span)),
            }
        )
    ip_rows = [
        {
            "id": i,
            "subscriber_id": rng.randrange(1, size["subscribers"] + 1),
            "ip_address": fake.ipv4_public() if rng.random() < 0.8 else fake.ipv6(),
            "user_agent": rng.choice(("Yealink SIP-T46U", "Snom D785", "Grandstream GXP2170")),
            "seen_at": stamp(_moment(rng, now, span)),
        }
        for i in range(1, size["voip_ip_log"] + 1)
    ]
    ticket_rows = []
    for _ in range(size["support_tickets"]):
        opened = _moment(rng, now, span)
        closed = opened + timedelta(hours=rng.expovariate(1 / 40))
        still_open = closed > now or rng.random() < 0.04
        ticket_rows.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "customer_id": rng.randrange(1, size["customers"] + 1),
                "contact_name": fake.name(),
                "contact_email": fake.email(),
                "subject": fake.sentence(nb_words=5),
                "body": fake.paragraph(nb_sentences=3),
                "opened_at": stamp(opened),
                "closed_at": None if still_open else stamp(closed),
            }
        )
    form_rows = [
        {
            "id": i,
            "name": fake.name(),
            "email": fake.email(),
            "phone": fake.phone_number(),
            "company": fake.company(),
            "message": fake.paragraph(nb_sentences=2),
            "submitted_at": None if i <= UNDATED_CONTACT_FORMS else stamp(_moment(rng, now, span)),
        }
        for i in range(1, size["contact_forms"] + 1)
    ]
    service_tables = _services(rng, fake, now, span, size["customers"], stamp)
    tables = [
        (customers, customer_rows),
        (subscribers, subscriber_rows),
        (cdrs, cdr_rows),
        (lawful_intercept_traffic, traffic_rows),
        (voip_ip_log, ip_rows),
        (support_tickets, ticket_rows),
        (contact_forms, form_rows),
        *service_tables,
    ]
    with engine.begin() as conn:
        for table, rows in tables:
            _insert(conn, table, rows)
    return {table.name: len(rows) for table, rows in tables}


def _services(rng, fake, now, span, n_customers, stamp) -> list[tuple[sa.Table, list[dict]]]:
    """Contracts (about a third ended, some within the last days) and the data that lives as
    long as they do."""
    contract_rows: list[dict] = []
    contact_rows: list[dict] = []
    address_rows: list[dict] = []
    billing_rows: list[dict] = []
    line_rows: list[dict] = []
    voip_rows: list[dict] = []
    mobile_rows: list[dict] = []
    for customer in range(1, n_customers + 1):
        billing_rows.append(
            {"id": customer, "customer_id": customer, "company_name": fake.company()}
        )
        for _ in range(rng.randint(1, 2)):
            contact_rows.append(
                {
                    "id": len(contact_rows) + 1,
                    "customer_id": customer,
                    "name": fake.name(),
                    "phone": fake.phone_number(),
                    "email": fake.company_email(),
                }
            )
        all_ended = customer == HELD_CUSTOMER or rng.random() < 0.3
        for _ in range(rng.randint(1, 3)):
            started = _moment(rng, now, span)
            if customer == HELD_CUSTOMER:
                ended = now - timedelta(days=730 + rng.randrange(30))
                # It ran before it ended: its start, drawn over the whole span, is moved to the
                # same place in the years before the end (no other draw changes).
                origin = now - span
                started = origin + (started - origin) * ((ended - origin) / span)
            elif all_ended:
                ended = started + (now - started) * rng.random()
            else:
                ended = None
            contract = {
                "id": len(contract_rows) + 1,
                "customer_id": customer,
                "service": rng.choice(("internet", "voip", "mobiel")),
                "started_at": stamp(started),
                "ended_at": None if ended is None else stamp(ended),
            }
            contract_rows.append(contract)
            address_rows.append(
                {
                    "id": len(address_rows) + 1,
                    "contract_id": contract["id"],
                    "customer_id": customer,
                    "street": fake.street_address(),
                    "postcode": fake.postcode(),
                    "city": fake.city(),
                }
            )
            if contract["service"] == "internet":
                line_rows.append(
                    {
                        "id": len(line_rows) + 1,
                        "contract_id": contract["id"],
                        "customer_id": customer,
                        "service_id": f"SVC-{rng.randrange(10**6, 10**7)}",
                        "line_id": f"LN-{rng.randrange(10**8, 10**9)}",
                        "public_ip": fake.ipv4_public(),
                    }
                )
            elif contract["service"] == "voip":
                for _ in range(rng.randint(1, 4)):
                    # Accounts go with their contract, and some are retired while it runs.
                    if ended is not None:
                        retired = contract["ended_at"]
                    elif rng.random() < 0.15:
                        retired = stamp(_moment(rng, now, span / 4))
                    else:
                        retired = None
                    voip_rows.append(
                        {
                            "id": len(voip_rows) + 1,
                            "customer_id": customer,
                            "name": fake.name(),
                            "phone": fake.phone_number(),
                            "email": fake.email(),
                            "decommissioned_at": retired,
                        }
                    )
            else:
                for _ in range(rng.randint(1, 5)):
                    mobile_rows.append(
                        {
                            "id": len(mobile_rows) + 1,
                            "contract_id": contract["id"],
                            "customer_id": customer,
                            "msisdn": f"+316{rng.randrange(10**7, 10**8)}",
                            "sim_iccid": f"8931{rng.randrange(10**15, 10**16)}",
                            "imei": f"35{rng.randrange(10**12, 10**13)}",
                            "last_roaming_notice_at": stamp(_moment(rng, now, span / 8)),
                        }
                    )
    return [
        (contracts, contract_rows),
        (org_contacts, contact_rows),
        (service_addresses, address_rows),
        (billing_names, billing_rows),
        (internet_lines, line_rows),
        (voip_accounts, voip_rows),
        (mobile_subscriptions, mobile_rows),
    ]
