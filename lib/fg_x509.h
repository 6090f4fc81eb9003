/*
 * fg_x509: keys, CSRs, certificates and the renewal proof of possession,
 * all on top of OpenSSL 3 (no hand-written ASN.1).
 */
#ifndef FG_X509_H
#define FG_X509_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

/* Key types the agent can generate and the gateway accepts. */
enum fg_key_type {
	FG_KEY_P256,
	FG_KEY_P384,
	FG_KEY_RSA2048,
	FG_KEY_RSA3072,
	FG_KEY_RSA4096,
	FG_KEY_ED25519,
	FG_KEY_TYPE_MAX
};

/* "p256", "p384", "rsa2048", "rsa3072", "rsa4096", "ed25519" <-> enum; -1 if unknown. */
int fg_key_type_parse(const char *s);
const char *fg_key_type_name(enum fg_key_type t);

/* Generate a fresh private key. Returns a new EVP_PKEY or NULL (err says why). */
EVP_PKEY *fg_key_generate(enum fg_key_type type, char *err, size_t errlen);

/* Unencrypted PKCS#8 PEM of the private key, written durably with
 * fg_write_file_atomic and the given mode/owner. The PEM buffer is wiped. */
int fg_key_save(const char *path, EVP_PKEY *key, mode_t mode, uid_t uid, gid_t gid,
		char *err, size_t errlen);
/* PKCS#8 PEM into a malloc'd string (caller wipes with OPENSSL_cleanse and frees). */
char *fg_key_to_pem(EVP_PKEY *key, size_t *len, char *err, size_t errlen);
EVP_PKEY *fg_key_load(const char *path, char *err, size_t errlen);

/* Build and sign a PKCS#10 CSR for key: subject CN=cn (when cn non-empty) and a
 * subjectAltName with the given DNS names (may be none). Returns DER in a
 * malloc'd buffer (*der, *derlen), caller frees. SHA-256 for EC/RSA, none for Ed25519. */
int fg_csr_build(EVP_PKEY *key, const char *cn, const char *const *dns, size_t ndns,
		 unsigned char **der, size_t *derlen, char *err, size_t errlen);

/* Names (and the SCEP challengePassword) a CSR carries. */
struct fg_csr_names {
	const char *cn;                      /* "" or NULL: no CN */
	const char *const *dns;
	size_t ndns;
	const char *const *ip;               /* textual IPv4/IPv6 */
	size_t nip;
	const char *const *email;
	size_t nemail;
	const char *challenge;               /* PKCS#9 challengePassword, NULL or "" for none */
};

/* fg_csr_build with every name type and an optional challengePassword. */
int fg_csr_build_names(EVP_PKEY *key, const struct fg_csr_names *nm, unsigned char **der,
		       size_t *derlen, char *err, size_t errlen);

/* 1 when the CSR carries exactly want: the CN (case-insensitive), the same
 * sets of DNS names, IP addresses and e-mail names, and the challenge
 * (none when want->challenge is empty); else 0 with why saying what differs. */
int fg_csr_matches(const unsigned char *der, size_t len, const struct fg_csr_names *want,
		   char *why, size_t whylen);

/* What the gateway learns from a CSR after checking it. */
#define FG_CSR_MAX_DNS 32
struct fg_csr_info {
	char cn[256];                        /* subject CN, "" when absent */
	char *dns[FG_CSR_MAX_DNS];           /* DNS SANs requested (malloc'd) */
	size_t ndns;
	char key_type[16];                   /* "ec", "rsa", "ed25519" */
	char curve[16];                      /* "P-256", "P-384" for EC, else "" */
	int key_bits;                        /* 256, 384, 2048, ... */
	char spki_sha256[65];                /* hex SHA-256 of the DER SubjectPublicKeyInfo */
};

/* Parse a DER CSR, verify its self-signature and key strength: RSA >= 2048
 * bits (and <= 8192), EC only on P-256 or P-384, Ed25519 allowed; anything else
 * is refused with a message naming what was wrong. On success fills info
 * (release with fg_csr_info_clear) and, when pubkey != NULL, hands back the
 * CSR's public key (caller frees). */
int fg_csr_check(const unsigned char *der, size_t len, struct fg_csr_info *info,
		 EVP_PKEY **pubkey, char *err, size_t errlen);
void fg_csr_info_clear(struct fg_csr_info *info);

/* DER <-> X509 and PEM helpers. */
X509 *fg_cert_from_der(const unsigned char *der, size_t len, char *err, size_t errlen);
int fg_cert_to_der(X509 *cert, unsigned char **der, size_t *len);            /* malloc'd */
char *fg_cert_to_pem(X509 *cert);                                             /* malloc'd */
/* Every certificate in a PEM text, in order. NULL (with err) if none parse. */
STACK_OF(X509) *fg_certs_from_pem(const char *pem, size_t len, char *err, size_t errlen);

/* Facts about a certificate for listings and agent decisions. */
struct fg_cert_info {
	char serial_hex[41];   /* upper-case hex, no leading zero bytes stripped */
	char subject[512];     /* RFC 2253 one-line */
	char issuer[512];
	int64_t not_before;    /* Unix seconds */
	int64_t not_after;
};
int fg_cert_info(X509 *cert, struct fg_cert_info *info, char *err, size_t errlen);

/* Verify leaf (+ untrusted chain) against anchors for TLS client auth use,
 * at the current time. 0 when it chains, -1 with the verify error text. */
int fg_cert_verify(X509 *leaf, STACK_OF(X509) *chain, STACK_OF(X509) *anchors,
		   char *err, size_t errlen);

/* 1 when cert's public key is key's public half, 0 when not. */
int fg_cert_matches_key(X509 *cert, EVP_PKEY *key);

/* Proof of possession for renewals: a signature by the current key over
 * "fleetgate-renew-v1\0" || request_id || "\0" || SHA-256(csr_der)
 * (SHA-256 digest for EC/RSA, PureEdDSA for Ed25519). */
int fg_pop_sign(EVP_PKEY *key, const char *request_id, const unsigned char *csr_der,
		size_t csr_len, unsigned char **sig, size_t *siglen, char *err, size_t errlen);
/* 0 when sig verifies with cert's public key, -1 otherwise (err says why). */
int fg_pop_verify(X509 *cert, const char *request_id, const unsigned char *csr_der,
		  size_t csr_len, const unsigned char *sig, size_t siglen, char *err, size_t errlen);

#endif
