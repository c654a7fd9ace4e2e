"""The CA benchmark's ceiling signs the same certificate ``sign_csr`` issues (same
subject, issuer, public key and extensions), so the ratio compares like with like."""

from __future__ import annotations

from cryptography import x509

from benchmarks.ca_sign import ME, _raw_sign, _setup


def test_ceiling_certificate_matches_what_sign_csr_issues() -> None:
    ca, workload, csr = _setup()
    issued = x509.load_pem_x509_certificate(ca.sign_csr(csr, ME)[0].encode())
    ceiling = _raw_sign(ca, workload.public_key())
    assert ceiling.subject == issued.subject and ceiling.issuer == issued.issuer
    assert ceiling.public_key() == issued.public_key()
    assert [(e.oid, e.critical, e.value) for e in ceiling.extensions] == [
        (e.oid, e.critical, e.value) for e in issued.extensions
    ]
    assert ceiling.signature_algorithm_oid == issued.signature_algorithm_oid
