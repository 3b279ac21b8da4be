"""A real SMTP server (aiosmtpd) for the email channel's tests.

Usage: smtp_sink.py OUTDIR [--auth USER:PASS] [--starttls CERT KEY] [--tls CERT KEY]

Listens on 127.0.0.1, port chosen by the OS, and prints the port on stdout.
Every accepted message is written to OUTDIR/<n>.json (written to a temporary
name, then renamed) with its envelope and decoded headers and body.
Recipients starting with "reject@" get 550, with "later@" 451.
Exits when its stdin closes (so it never outlives the test).
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


# aiosmtpd logs warnings about AUTH without TLS, which these tests want.
logging.disable(logging.WARNING)


class Sink:
    def __init__(self, outdir):
        self.outdir = outdir
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject@"):
            return "550 5.1.1 no such user here"
        if address.startswith("later@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "message_id": str(msg["Message-ID"]),
            "body": body.get_content() if body is not None else "",
            "tls": session.ssl is not None,
            "authenticated": bool(session.authenticated),
        }
        tmp = os.path.join(self.outdir, ".%d.tmp" % self.count)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.outdir, "%d.json" % self.count))
        return "250 Message accepted"


def tls_context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("--auth")
    p.add_argument("--starttls", nargs=2)
    p.add_argument("--tls", nargs=2)
    a = p.parse_args()
    handler = Sink(a.outdir)
    kw = {"hostname": "sink.test", "auth_require_tls": False}
    if a.auth:
        user, password = a.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, data):
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == user
                and data.password.decode() == password
            )
            return AuthResult(success=ok, handled=False)

        kw["authenticator"] = authenticator
        kw["auth_required"] = True
    if a.starttls:
        kw["tls_context"] = tls_context(*a.starttls)
        kw["require_starttls"] = True
    server_ssl = tls_context(*a.tls) if a.tls else None
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, **kw), host="127.0.0.1", port=0, ssl=server_ssl
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    # Exit when the test closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


asyncio.run(main())
