"""Sandboxes of the third parties the platform talks to, speaking their real protocols.

Fakes are allowed only for parties outside the platform; each one here serves its protocol
over a real socket (HTTP with aiohttp, SMTP with aiosmtpd), runs standalone as
``python -m services.sandbox.<name> --port P`` and starts in-process for tests with
``await sandbox.run(port=0)``, which returns the bound port.
"""
