/*
 * signer.c: the signer process, which alone holds the CA keys (signer.h,
 * docs/security.md).
 *
 * Life of the process (signer_spawn forks it; nothing here returns):
 *   1. keep the socket and stderr, close every other descriptor;
 *   2. load and check the CA key and certificate of every "local" backend;
 *   3. started as root: drop to the configured user (or nobody), checked;
 *      not dumpable, no core files, no_new_privs, die with the parent;
 *   4. install the seccomp allowlist (sandbox_syscalls below): anything
 *      else kills the process;
 *   5. answer requests until the daemon closes its end.
 *
 * The issuance boundary (check_cert, check_crl, check_ocsp) is enforced
 * here, on the decoded object, whatever the daemon claims: a compromised
 * daemon can ask for signatures but cannot get a CA certificate, a
 * certificate beyond its profile, a second certificate under one serial,
 * or a CRL or OCSP answer of a lifetime the config does not allow.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1t.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "fg_log.h"
#include "fg_util.h"
#include "names.h"
#include "signer.h"
#include "signer.pb-c.h"
#include "signer_ipc.h"

#define SIGNER_FD 3               /* where the child keeps its socket */
#define SKEW 300                  /* seconds of clock slack on thisUpdate and validity */
#define SERIAL_MIN_BYTES 8        /* >= 64 bits (CA/B BR 7.1), as the local CA draws 16 */
#define SERIAL_TABLE_MAX (1u << 18) /* serials remembered before the table starts over */

/* One CA key and what the checks need of its certificate. */
struct ca_key {
	char backend[64];
	EVP_PKEY *key;
	X509 *cert;
	const EVP_MD *md;
	X509_ALGOR *sigalg;           /* what X509_sign writes with key and md */
	unsigned char *aid;           /* sigalg as DER, for KIND_ALGORITHM */
	int aidlen;
	ASN1_OCTET_STRING *ski;       /* leaves' AKI */
	int64_t not_after;
	int64_t crl_validity;         /* ceiling of nextUpdate - thisUpdate */
	int64_t ocsp_validity;
	EVP_MD_CTX *tmpl;             /* a signing context set up once, copied per signature */
};

/* A serial the daemon reserved (state 1) or that was signed (state 2, with
 * the hash of what was signed), per backend. Open addressing. */
struct serial_slot {
	uint8_t state;
	uint8_t ca;                   /* index into cas */
	char hex[42];
	unsigned char tbs[32];        /* SHA-256 of the signed record */
};

struct signer {
	const struct gw_config *cfg;
	struct ca_key *cas;
	size_t ncas;
	unsigned flags;
	struct serial_slot *serials;
	size_t cap, used;
	uint64_t signed_n, refused_n;
};

/* ---- the sandbox: everything the process may do, in one place ---- */

/* The system calls the signer needs once its keys are loaded: the socket
 * (read/write on SIGNER_FD, stderr for log lines), memory, locks, time and
 * randomness for ECDSA nonces, and exit. Anything else kills the process
 * (SCMP_ACT_KILL_PROCESS). */
static const struct {
	int nr;
	const char *why;
} sandbox_syscalls[] = {
	{ SCMP_SYS(read), "requests (SIGNER_FD only)" },
	{ SCMP_SYS(write), "replies (SIGNER_FD) and log lines (stderr)" },
	{ SCMP_SYS(writev), "replies (SIGNER_FD) and log lines (stderr)" },
	{ SCMP_SYS(mmap), "malloc" },
	{ SCMP_SYS(munmap), "free" },
	{ SCMP_SYS(mremap), "realloc" },
	{ SCMP_SYS(brk), "malloc" },
	{ SCMP_SYS(madvise), "free" },
	{ SCMP_SYS(futex), "OpenSSL's locks" },
	{ SCMP_SYS(getrandom), "ECDSA nonces, DRBG reseeds" },
	{ SCMP_SYS(clock_gettime), "validity checks, log timestamps" },
	{ SCMP_SYS(gettimeofday), "time(3)" },
	{ SCMP_SYS(getpid), "OpenSSL's fork check of its DRBG" },
	{ SCMP_SYS(rt_sigreturn), "return from a signal" },
	{ SCMP_SYS(exit), "exit" },
	{ SCMP_SYS(exit_group), "exit" },
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
	/* Sanitizer builds only (the one place the filter widens): the
	 * runtime's allocator and reports. */
	{ SCMP_SYS(mprotect), "sanitizer runtime" },
	{ SCMP_SYS(sigaltstack), "sanitizer runtime" },
	{ SCMP_SYS(rt_sigprocmask), "sanitizer runtime" },
	{ SCMP_SYS(sched_yield), "sanitizer runtime" },
	{ SCMP_SYS(gettid), "sanitizer runtime" },
	{ SCMP_SYS(prctl), "sanitizer runtime" },
	{ SCMP_SYS(getrusage), "sanitizer runtime" },
	{ SCMP_SYS(readlink), "sanitizer reports" },
	{ SCMP_SYS(openat), "sanitizer reports (/proc/self/maps)" },
	{ SCMP_SYS(close), "sanitizer reports" },
	{ SCMP_SYS(fstat), "sanitizer reports" },
	{ SCMP_SYS(newfstatat), "sanitizer reports" },
	{ SCMP_SYS(lseek), "sanitizer reports" },
#endif
};
#define N_SYSCALLS (sizeof sandbox_syscalls / sizeof sandbox_syscalls[0])

/* Install the allowlist. read/write/writev are limited to the socket and
 * stderr by their first argument. 0, or -1 with err. */
static int apply_seccomp(char *err, size_t errlen)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	int rc;

	if (ctx == NULL) {
		fg_seterr(err, errlen, "seccomp_init failed (libseccomp cannot build a filter)");
		return -1;
	}
	for (size_t i = 0; i < N_SYSCALLS; i++) {
		int nr = sandbox_syscalls[i].nr;
		if (nr == SCMP_SYS(read)) {
			rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, SIGNER_FD));
		} else if (nr == SCMP_SYS(write) || nr == SCMP_SYS(writev)) {
			rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, SIGNER_FD));
			if (rc == 0)
				rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, 2));
		} else {
			rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		}
		if (rc != 0) {
			fg_seterr(err, errlen, "seccomp: cannot allow system call %d (%s): %s", nr,
				  sandbox_syscalls[i].why, strerror(-rc));
			seccomp_release(ctx);
			return -1;
		}
	}
	rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc != 0) {
		fg_seterr(err, errlen, "seccomp: the kernel refused the filter: %s", strerror(-rc));
		return -1;
	}
	return 0;
}

/* Started as root: become cfg->user (or nobody), with no supplementary
 * groups, and check that root cannot be had back. Not root: stay who we
 * are (there is nothing to drop). *uid is who we run as. 0 or -1. */
static int drop_privileges(const struct gw_config *cfg, uid_t *uid, char *err, size_t errlen)
{
	const char *user = cfg->user[0] ? cfg->user : "nobody";
	struct passwd *pw;

	*uid = geteuid();
	if (*uid != 0)
		return 0;
	errno = 0;
	if ((pw = getpwnam(user)) == NULL) {
		fg_seterr(err, errlen, "user '%s' does not exist%s; create it (useradd --system %s) or set user = \"...\" in fleetgated.conf",
			  user, errno ? "" : "", user);
		return -1;
	}
	if (pw->pw_uid == 0) {
		fg_seterr(err, errlen, "user '%s' is root; set user = to an unprivileged user in fleetgated.conf", user);
		return -1;
	}
	if (setgroups(0, NULL) != 0 || setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) != 0 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) != 0) {
		fg_seterr(err, errlen, "cannot switch to user '%s' (uid %u): %s", user, (unsigned)pw->pw_uid,
			  strerror(errno));
		return -1;
	}
	if (setuid(0) == 0 || geteuid() != pw->pw_uid || getegid() != pw->pw_gid) {
		fg_seterr(err, errlen, "switched to user '%s' but root can be regained; refusing to go on", user);
		return -1;
	}
	*uid = pw->pw_uid;
	return 0;
}

/* ---- loading keys ---- */

/* A duration setting of a backend ("7d", "12h", "3600", also "1y"), or
 * dflt when unset. -1 when malformed. */
static int64_t setting_span(const struct config_backend *cb, const char *key, int64_t dflt)
{
	const char *v = fg_kv_get(cb->settings, cb->nsettings, key);
	if (v == NULL || v[0] == '\0')
		return dflt;
	int64_t d = fg_parse_duration(v);
	if (d > 0)
		return d;
	char *end;
	long long y = strtoll(v, &end, 10);
	if (end != v && strcmp(end, "y") == 0 && y > 0 && y <= 100)
		return (int64_t)y * 365 * 86400;
	return -1;
}

int signer_holds_key(const struct config_backend *cb)
{
	return strcmp(cb->plugin, "local") == 0;
}

size_t signer_key_count(const struct gw_config *cfg)
{
	size_t n = 0;
	for (size_t i = 0; i < cfg->nbackends; i++)
		if (signer_holds_key(&cfg->backends[i]))
			n++;
	return n;
}

/* The digest the local CA signs with for key k (as plugins/local). */
static const EVP_MD *key_digest(const EVP_PKEY *k)
{
	if (EVP_PKEY_is_a(k, "EC")) {
		int bits = EVP_PKEY_get_bits(k);
		if (bits > 384)
			return EVP_sha512();
		if (bits > 256)
			return EVP_sha384();
	}
	return EVP_sha256();
}

/* The AlgorithmIdentifier X509_sign writes for key and md. NULL on failure. */
static X509_ALGOR *key_algor(EVP_PKEY *key, const EVP_MD *md)
{
	X509 *x = X509_new();
	X509_ALGOR *alg = NULL;

	/* Signing an empty certificate is the plain way to have OpenSSL say
	 * which algorithm it writes. */
	if (x != NULL && X509_set_version(x, X509_VERSION_3) == 1 && X509_set_pubkey(x, key) == 1 &&
	    X509_sign(x, key, md) > 0)
		alg = X509_ALGOR_dup(X509_get0_tbs_sigalg(x));
	X509_free(x);
	return alg;
}

int signer_key_dir(const struct gw_config *cfg, const struct config_backend *cb, char *out, size_t outlen)
{
	const char *sd = fg_kv_get(cb->settings, cb->nsettings, "state_dir");
	const char *cd = fg_kv_get(cb->settings, cb->nsettings, "ca_dir");
	cd = cd && cd[0] ? cd : "ca";
	if (cd[0] == '/')
		return fg_strlcpy(out, cd, outlen) < outlen ? 0 : -1;
	return fg_path_join(sd ? sd : cfg->state_dir, cd, out, outlen);
}

/* Load one backend's key and certificate, checked as a matching CA pair. */
static int load_ca(const struct gw_config *cfg, const struct config_backend *cb, struct ca_key *ca,
		   char *err, size_t errlen)
{
	char dir[PATH_MAX], keypath[PATH_MAX + 16], crtpath[PATH_MAX + 16];
	char *text = NULL;
	size_t len = 0;
	BIO *b = NULL;
	struct tm tm;
	int rc = -1;

	fg_strlcpy(ca->backend, cb->name, sizeof ca->backend);
	if (signer_key_dir(cfg, cb, dir, sizeof dir) != 0) {
		fg_seterr(err, errlen, "backend %s: ca_dir path is too long", cb->name);
		return -1;
	}
	snprintf(keypath, sizeof keypath, "%s/ca.key", dir);
	snprintf(crtpath, sizeof crtpath, "%s/ca.crt", dir);
	ca->crl_validity = setting_span(cb, "crl_validity", 7 * 86400);
	ca->ocsp_validity = setting_span(cb, "ocsp_validity", 3600);
	if (ca->crl_validity <= 0 || ca->ocsp_validity <= 0) {
		fg_seterr(err, errlen, "backend %s: crl_validity or ocsp_validity is not a duration", cb->name);
		return -1;
	}
	if (fg_read_file(keypath, 1024 * 1024, &text, &len, err, errlen) != 0) {
		char e2[1024];
		fg_strlcpy(e2, err, sizeof e2);
		fg_seterr(err, errlen, "backend %s: %s; run `fleetgate init` to make the CA", cb->name, e2);
		return -1;
	}
	b = BIO_new_mem_buf(text, (int)len);
	ca->key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	OPENSSL_cleanse(text, len);
	free(text);
	text = NULL;
	if (ca->key == NULL) {
		fg_ssl_err(err, errlen, "");
		char e2[512];
		fg_strlcpy(e2, err, sizeof e2);
		fg_seterr(err, errlen, "backend %s: %s is not a PEM private key%s", cb->name, keypath, e2);
		goto out;
	}
	if (fg_read_file(crtpath, 1024 * 1024, &text, &len, err, errlen) != 0)
		goto out;
	b = BIO_new_mem_buf(text, (int)len);
	ca->cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (ca->cert == NULL || X509_check_private_key(ca->cert, ca->key) != 1 || X509_check_ca(ca->cert) != 1) {
		fg_seterr(err, errlen, "backend %s: %s is not the CA certificate of the key in %s; restore the matching pair",
			  cb->name, crtpath, keypath);
		goto out;
	}
	const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(ca->cert);
	ca->ski = ski ? ASN1_OCTET_STRING_dup(ski) : NULL;
	if (ca->ski == NULL) {
		/* RFC 5280 method 1, as the local CA computes it */
		unsigned char md[SHA_DIGEST_LENGTH];
		unsigned int mdlen = 0;
		const ASN1_BIT_STRING *pk = X509_get0_pubkey_bitstr(ca->cert);
		if (pk && EVP_Digest(ASN1_STRING_get0_data(pk), (size_t)ASN1_STRING_length(pk), md, &mdlen,
				     EVP_sha1(), NULL) == 1 &&
		    (ca->ski = ASN1_OCTET_STRING_new()) != NULL)
			ASN1_OCTET_STRING_set(ca->ski, md, (int)mdlen);
	}
	ca->md = key_digest(ca->key);
	ca->sigalg = key_algor(ca->key, ca->md);
	ca->aid = NULL;
	if (ca->ski == NULL || ca->sigalg == NULL || (ca->aidlen = i2d_X509_ALGOR(ca->sigalg, &ca->aid)) <= 0 ||
	    ASN1_TIME_to_tm(X509_get0_notAfter(ca->cert), &tm) != 1) {
		fg_seterr(err, errlen, "backend %s: cannot prepare the CA in %s for signing", cb->name, dir);
		goto out;
	}
	/* Set up the signing context once: OpenSSL 3 fetches the digest and
	 * signature implementations on every EVP_DigestSignInit, and a copy of
	 * an initialised context skips that. */
	if ((ca->tmpl = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(ca->tmpl, NULL, ca->md, NULL, ca->key) != 1) {
		fg_seterr(err, errlen, "backend %s: cannot set up signing with the CA key", cb->name);
		goto out;
	}
	/* Fill the certificate's extension cache now, single-threaded. */
	X509_get_extension_flags(ca->cert);
	ca->not_after = (int64_t)timegm(&tm);
	rc = 0;
out:
	free(text);
	ERR_clear_error();
	return rc;
}

/* ---- the serial table ---- */

static uint64_t serial_hash(uint8_t ca, const char *hex)
{
	uint64_t h = 1469598103934665603ull ^ ca;
	for (const char *p = hex; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	return h;
}

/* The slot of (ca, hex): the one holding it, or the empty one where it
 * goes. NULL when the table cannot grow. */
static struct serial_slot *serial_find(struct signer *s, uint8_t ca, const char *hex)
{
	if (s->used + 1 > s->cap / 2) {
		size_t ncap = s->cap ? s->cap * 2 : 1024;
		if (s->used >= SERIAL_TABLE_MAX) {
			/* Serials are 121 random bits: forgetting old ones
			 * only loses the check against a daemon that reuses
			 * a serial older than this many. */
			fg_warn("signer", NULL, "serial table full at %zu serials; starting it over", s->used);
			memset(s->serials, 0, s->cap * sizeof *s->serials);
			s->used = 0;
		} else {
			struct serial_slot *n = calloc(ncap, sizeof *n);
			if (n == NULL)
				return NULL;
			for (size_t i = 0; i < s->cap; i++) {
				if (s->serials[i].state == 0)
					continue;
				size_t j = serial_hash(s->serials[i].ca, s->serials[i].hex) & (ncap - 1);
				while (n[j].state != 0)
					j = (j + 1) & (ncap - 1);
				n[j] = s->serials[i];
			}
			free(s->serials);
			s->serials = n;
			s->cap = ncap;
		}
	}
	size_t j = serial_hash(ca, hex) & (s->cap - 1);
	while (s->serials[j].state != 0 && (s->serials[j].ca != ca || strcmp(s->serials[j].hex, hex) != 0))
		j = (j + 1) & (s->cap - 1);
	return &s->serials[j];
}

/* Upper-case hex of a positive serial, as the store keeps it. 0 or -1. */
static int serial_text(const ASN1_INTEGER *ai, char *out, size_t outlen, int *nbytes)
{
	BIGNUM *bn = ai ? ASN1_INTEGER_to_BN(ai, NULL) : NULL;
	char *hex = NULL;
	int rc = -1;

	if (bn != NULL && !BN_is_negative(bn) && !BN_is_zero(bn) && (hex = BN_bn2hex(bn)) != NULL &&
	    strlen(hex) < outlen) {
		fg_strlcpy(out, hex, outlen);
		*nbytes = BN_num_bytes(bn);
		rc = 0;
	}
	OPENSSL_free(hex);
	BN_free(bn);
	return rc;
}

/* ---- the issuance boundary ---- */

static int64_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;
	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return INT64_MIN;
	return (int64_t)timegm(&tm);
}

/* The X509v3 KU bits (X509_get_key_usage) a profile's FG_KU_* allow. */
static uint32_t ku_bits(uint32_t fg)
{
	uint32_t b = 0;
	if (fg & FG_KU_DIGITAL_SIGNATURE)
		b |= KU_DIGITAL_SIGNATURE;
	if (fg & FG_KU_NON_REPUDIATION)
		b |= KU_NON_REPUDIATION;
	if (fg & FG_KU_KEY_ENCIPHERMENT)
		b |= KU_KEY_ENCIPHERMENT;
	if (fg & FG_KU_DATA_ENCIPHERMENT)
		b |= KU_DATA_ENCIPHERMENT;
	if (fg & FG_KU_KEY_AGREEMENT)
		b |= KU_KEY_AGREEMENT;
	return b;
}

/* Is obj one of the profile's extended key usages? */
static int eku_allowed(const struct config_profile *prof, const ASN1_OBJECT *obj)
{
	int want = OBJ_obj2nid(obj);
	for (size_t i = 0; i < prof->neku; i++) {
		int dotted = prof->eku[i][0] >= '0' && prof->eku[i][0] <= '2' && prof->eku[i][1] == '.';
		if (!dotted) {
			/* a short name ("clientAuth"): compare NIDs */
			if (want != NID_undef && OBJ_sn2nid(prof->eku[i]) == want)
				return 1;
			continue;
		}
		ASN1_OBJECT *o = OBJ_txt2obj(prof->eku[i], 1);
		int same = o != NULL && OBJ_cmp(o, obj) == 0;
		ASN1_OBJECT_free(o);
		if (same)
			return 1;
	}
	return 0;
}

/* ---- the certificate as the signer reads it ----
 *
 * A to-be-signed certificate is decoded with templates of OpenSSL's ASN.1
 * engine that keep the subjectPublicKeyInfo as its algorithm and bits: an
 * X509 would decode the key through OpenSSL 3's decoder framework on every
 * request, which costs more than the signature. The TBSCertificate keeps
 * its received encoding (ASN1_SEQUENCE_enc), so that exactly the checked
 * bytes are signed and returned. RFC 5280 4.1. */

typedef struct {
	X509_ALGOR *algor;
	ASN1_BIT_STRING *key;
} FG_SPKI;
DECLARE_ASN1_ITEM(FG_SPKI)

ASN1_SEQUENCE(FG_SPKI) = {
	ASN1_SIMPLE(FG_SPKI, algor, X509_ALGOR),
	ASN1_SIMPLE(FG_SPKI, key, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(FG_SPKI)

typedef struct {
	ASN1_ENCODING enc;
	ASN1_INTEGER *version;        /* [0] EXPLICIT, absent = v1 */
	ASN1_INTEGER *serial;
	X509_ALGOR *sigalg;
	X509_NAME *issuer;
	X509_VAL *validity;
	X509_NAME *subject;
	FG_SPKI *spki;
	ASN1_BIT_STRING *issuer_uid;  /* [1] IMPLICIT */
	ASN1_BIT_STRING *subject_uid; /* [2] IMPLICIT */
	STACK_OF(X509_EXTENSION) *exts; /* [3] EXPLICIT */
} FG_TBS;
DECLARE_ASN1_ITEM(FG_TBS)

ASN1_SEQUENCE_enc(FG_TBS, enc, 0) = {
	ASN1_EXP_OPT(FG_TBS, version, ASN1_INTEGER, 0),
	ASN1_SIMPLE(FG_TBS, serial, ASN1_INTEGER),
	ASN1_SIMPLE(FG_TBS, sigalg, X509_ALGOR),
	ASN1_SIMPLE(FG_TBS, issuer, X509_NAME),
	ASN1_SIMPLE(FG_TBS, validity, X509_VAL),
	ASN1_SIMPLE(FG_TBS, subject, X509_NAME),
	ASN1_SIMPLE(FG_TBS, spki, FG_SPKI),
	ASN1_IMP_OPT(FG_TBS, issuer_uid, ASN1_BIT_STRING, 1),
	ASN1_IMP_OPT(FG_TBS, subject_uid, ASN1_BIT_STRING, 2),
	ASN1_EXP_SEQUENCE_OF_OPT(FG_TBS, exts, X509_EXTENSION, 3),
} ASN1_SEQUENCE_END_enc(FG_TBS, FG_TBS)

typedef struct {
	FG_TBS *tbs;
	X509_ALGOR *sigalg;
	ASN1_BIT_STRING *signature;
} FG_CERT;
DECLARE_ASN1_ITEM(FG_CERT)

ASN1_SEQUENCE(FG_CERT) = {
	ASN1_SIMPLE(FG_CERT, tbs, FG_TBS),
	ASN1_SIMPLE(FG_CERT, sigalg, X509_ALGOR),
	ASN1_SIMPLE(FG_CERT, signature, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(FG_CERT)

/* RSAPublicKey (RFC 8017 A.1.1), for the modulus size. */
typedef struct {
	ASN1_INTEGER *n;
	ASN1_INTEGER *e;
} FG_RSAPUB;
DECLARE_ASN1_ITEM(FG_RSAPUB)

ASN1_SEQUENCE(FG_RSAPUB) = {
	ASN1_SIMPLE(FG_RSAPUB, n, ASN1_INTEGER),
	ASN1_SIMPLE(FG_RSAPUB, e, ASN1_INTEGER),
} ASN1_SEQUENCE_END(FG_RSAPUB)

DECLARE_ASN1_FUNCTIONS(FG_CERT)
IMPLEMENT_ASN1_FUNCTIONS(FG_CERT)
DECLARE_ASN1_FUNCTIONS(FG_RSAPUB)
IMPLEMENT_ASN1_FUNCTIONS(FG_RSAPUB)

/* A key the gateway would take in a CSR: RSA >= 2048 bits, P-256, P-384,
 * Ed25519, told from the subjectPublicKeyInfo without decoding the key. */
static int spki_ok(const FG_SPKI *k)
{
	const ASN1_OBJECT *obj;
	const void *pval;
	int ptype;

	X509_ALGOR_get0(&obj, &ptype, &pval, k->algor);
	switch (OBJ_obj2nid(obj)) {
	case NID_X9_62_id_ecPublicKey: {
		int curve = ptype == V_ASN1_OBJECT ? OBJ_obj2nid(pval) : NID_undef;
		return curve == NID_X9_62_prime256v1 || curve == NID_secp384r1;
	}
	case NID_ED25519:
		return ptype == V_ASN1_UNDEF && ASN1_STRING_length(k->key) == 32;
	case NID_rsaEncryption: {
		const unsigned char *p = ASN1_STRING_get0_data(k->key);
		FG_RSAPUB *r = d2i_FG_RSAPUB(NULL, &p, ASN1_STRING_length(k->key));
		int ok = 0;
		if (r != NULL) {
			const unsigned char *d = ASN1_STRING_get0_data(r->n);
			int len = ASN1_STRING_length(r->n);
			while (len > 0 && *d == 0) {
				d++;
				len--;
			}
			ok = len >= 256 && len <= 2048 && r->n->type == V_ASN1_INTEGER;
		}
		FG_RSAPUB_free(r);
		return ok;
	}
	default:
		return 0;
	}
}

/* The subject: CN entries only, allowed by the profile, well-formed. */
static int check_subject(const struct config_profile *prof, const X509_NAME *nm, char *why, size_t n)
{
	int count = X509_NAME_entry_count(nm);

	for (int i = 0; i < count; i++) {
		const X509_NAME_ENTRY *e = X509_NAME_get_entry(nm, i);
		unsigned char *utf8 = NULL;
		if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)) != NID_commonName) {
			snprintf(why, n, "the subject has an attribute other than CN; the gateway names subjects by CN only");
			return -1;
		}
		if (!(prof->names & NAME_CN)) {
			snprintf(why, n, "profile %s allows no subject CN", prof->name);
			return -1;
		}
		int l = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
		int ok = l >= 0 && (size_t)l == strlen((char *)utf8) && name_cn_valid((char *)utf8);
		OPENSSL_free(utf8);
		if (!ok) {
			snprintf(why, n, "the subject CN is not a valid name (control characters or over %d bytes)",
				 NAME_CN_MAX);
			return -1;
		}
	}
	return 0;
}

/* subjectAltName: only the name types the profile allows, each valid. */
static int check_san(const struct config_profile *prof, const GENERAL_NAMES *gens, char *why, size_t n)
{
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const ASN1_STRING *v = NULL;
		char buf[300];
		unsigned need = 0;
		int (*valid)(const char *) = NULL;
		const char *what = "";

		switch (g->type) {
		case GEN_DNS: v = g->d.dNSName; need = NAME_DNS; valid = name_dns_valid; what = "DNS name"; break;
		case GEN_EMAIL: v = g->d.rfc822Name; need = NAME_EMAIL; valid = name_email_valid; what = "e-mail address"; break;
		case GEN_IPADD: v = g->d.iPAddress; need = NAME_IP; what = "IP address"; break;
		default:
			snprintf(why, n, "the subjectAltName has a name of type %d; only DNS, IP and e-mail names are issued",
				 g->type);
			return -1;
		}
		if (!(prof->names & need)) {
			snprintf(why, n, "profile %s allows no %s", prof->name, what);
			return -1;
		}
		int l = ASN1_STRING_length(v);
		if (g->type == GEN_IPADD) {
			if (l != 4 && l != 16) {
				snprintf(why, n, "the subjectAltName has an IP address of %d bytes", l);
				return -1;
			}
			continue;
		}
		if (l <= 0 || (size_t)l >= sizeof buf || memchr(ASN1_STRING_get0_data(v), 0, (size_t)l) != NULL) {
			snprintf(why, n, "the subjectAltName has a malformed %s", what);
			return -1;
		}
		memcpy(buf, ASN1_STRING_get0_data(v), (size_t)l);
		buf[l] = 0;
		if (!valid(buf)) {
			snprintf(why, n, "the subjectAltName %s '%.64s' is not valid", what, buf);
			return -1;
		}
	}
	return 0;
}

/* The extensions a leaf may carry; anything else is refused. */
static int ext_allowed(int nid)
{
	switch (nid) {
	case NID_basic_constraints:
	case NID_key_usage:
	case NID_ext_key_usage:
	case NID_subject_alt_name:
	case NID_subject_key_identifier:
	case NID_authority_key_identifier:
	case NID_crl_distribution_points:
	case NID_info_access:
		return 1;
	default:
		return 0;
	}
}

/* The extension nid of exts decoded, or NULL. *bad is set when it is
 * present but does not decode. */
static void *ext_get(const STACK_OF(X509_EXTENSION) *exts, int nid, int *bad)
{
	int crit = 0;
	void *v = X509V3_get_d2i(exts, nid, &crit, NULL);
	if (v == NULL && crit != -1)
		*bad = 1;
	return v;
}

/* Check a to-be-signed certificate of ca for profile pname against the
 * boundary (see the file comment). 0, or -1 with why. */
static EVP_MD *tbs_md;            /* SHA-256, fetched at start */

static int check_cert(struct signer *s, const struct ca_key *ca, const char *pname, const FG_TBS *t,
		      char *why, size_t n)
{
	const struct config_profile *prof = pname ? config_profile(s->cfg, pname) : NULL;
	int64_t now = fg_now(), nb = asn1_time(t->validity->notBefore), na = asn1_time(t->validity->notAfter);
	BASIC_CONSTRAINTS *bc = NULL;
	AUTHORITY_KEYID *aki = NULL;
	ASN1_BIT_STRING *ku = NULL;
	EXTENDED_KEY_USAGE *eku = NULL;
	GENERAL_NAMES *san = NULL;
	int bad = 0, rc = -1;

	if (prof == NULL) {
		snprintf(why, n, "profile '%s' is not in the signer's configuration", pname ? pname : "");
		return -1;
	}
	if (strcmp(prof->backend, ca->backend) != 0) {
		snprintf(why, n, "profile %s issues from backend %s, not %s", prof->name, prof->backend, ca->backend);
		return -1;
	}
	if (t->version == NULL || ASN1_INTEGER_get(t->version) != 2 || t->issuer_uid || t->subject_uid) {
		snprintf(why, n, "not a version 3 certificate (or one with unique identifiers)");
		return -1;
	}
	if (X509_NAME_cmp(t->issuer, X509_get_subject_name(ca->cert)) != 0) {
		snprintf(why, n, "the issuer is not this CA's subject");
		return -1;
	}
	if (X509_ALGOR_cmp(t->sigalg, ca->sigalg) != 0) {
		snprintf(why, n, "the certificate names another signature algorithm than this CA signs with");
		return -1;
	}
	for (int i = 0; i < sk_X509_EXTENSION_num(t->exts); i++) {
		const ASN1_OBJECT *o = X509_EXTENSION_get_object(sk_X509_EXTENSION_value(t->exts, i));
		int nid = OBJ_obj2nid(o);
		if (!ext_allowed(nid)) {
			char oid[80];
			OBJ_obj2txt(oid, sizeof oid, o, 1);
			snprintf(why, n, "extension %s is not one a leaf of this CA may carry", oid);
			return -1;
		}
		for (int j = 0; j < i; j++)
			if (OBJ_obj2nid(X509_EXTENSION_get_object(sk_X509_EXTENSION_value(t->exts, j))) == nid) {
				snprintf(why, n, "extension %s appears twice", OBJ_nid2sn(nid));
				return -1;
			}
	}
	bc = ext_get(t->exts, NID_basic_constraints, &bad);
	aki = ext_get(t->exts, NID_authority_key_identifier, &bad);
	ku = ext_get(t->exts, NID_key_usage, &bad);
	eku = ext_get(t->exts, NID_ext_key_usage, &bad);
	san = ext_get(t->exts, NID_subject_alt_name, &bad);
	if (bad) {
		snprintf(why, n, "an extension does not decode");
		goto out;
	}
	if (bc == NULL || bc->ca || bc->pathlen != NULL) {
		snprintf(why, n, bc && bc->ca ? "basicConstraints CA:TRUE: the signer never makes a CA certificate"
					    : "no basicConstraints CA:FALSE");
		goto out;
	}
	if (aki == NULL || aki->keyid == NULL || ASN1_OCTET_STRING_cmp(aki->keyid, ca->ski) != 0) {
		snprintf(why, n, "the authorityKeyIdentifier is not this CA's key id");
		goto out;
	}
	if (nb == INT64_MIN || na == INT64_MIN || na <= nb) {
		snprintf(why, n, "the validity period is unreadable or empty");
		goto out;
	}
	if (na - nb > prof->max_validity + SKEW || na > now + prof->max_validity + SKEW) {
		snprintf(why, n, "validity of %lld s exceeds profile %s's maximum of %lld s", (long long)(na - nb),
			 prof->name, (long long)prof->max_validity);
		goto out;
	}
	if (nb > now + SKEW) {
		snprintf(why, n, "notBefore is %lld s in the future", (long long)(nb - now));
		goto out;
	}
	if (na > ca->not_after) {
		snprintf(why, n, "notAfter is past the CA certificate's own");
		goto out;
	}
	if (ku != NULL) {
		/* the first two octets, as X509_get_key_usage reads them */
		uint32_t bits = (ku->length > 0 ? ku->data[0] : 0) | (ku->length > 1 ? (uint32_t)ku->data[1] << 8 : 0);
		if (bits & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) {
			snprintf(why, n, "key usage keyCertSign or cRLSign: the signer never makes a CA certificate");
			goto out;
		}
		if (ku->length > 2 || (bits & ~ku_bits(prof->key_usage))) {
			snprintf(why, n, "key usage 0x%x is outside profile %s's 0x%x", (unsigned)bits, prof->name,
				 (unsigned)ku_bits(prof->key_usage));
			goto out;
		}
	}
	for (int i = 0; eku != NULL && i < sk_ASN1_OBJECT_num(eku); i++) {
		const ASN1_OBJECT *o = sk_ASN1_OBJECT_value(eku, i);
		if (!eku_allowed(prof, o)) {
			char oid[80];
			int nid = OBJ_obj2nid(o);
			if (nid != NID_undef && OBJ_nid2sn(nid) != NULL)
				fg_strlcpy(oid, OBJ_nid2sn(nid), sizeof oid);
			else
				OBJ_obj2txt(oid, sizeof oid, o, 1);
			snprintf(why, n, "extended key usage %s is not in profile %s", oid, prof->name);
			goto out;
		}
	}
	if (check_subject(prof, t->subject, why, n) != 0 || (san && check_san(prof, san, why, n) != 0))
		goto out;
	if (X509_NAME_entry_count(t->subject) == 0 && san == NULL) {
		snprintf(why, n, "the certificate names nothing (no subject, no subjectAltName)");
		goto out;
	}
	if (!spki_ok(t->spki)) {
		snprintf(why, n, "the certified key is not RSA >= 2048, P-256, P-384 or Ed25519");
		goto out;
	}
	rc = 0;
out:
	BASIC_CONSTRAINTS_free(bc);
	AUTHORITY_KEYID_free(aki);
	ASN1_BIT_STRING_free(ku);
	EXTENDED_KEY_USAGE_free(eku);
	GENERAL_NAMES_free(san);
	return rc;
}

/* A CRL of ca: v2, this CA's name and key id, a cRLNumber, reason codes
 * only on entries, thisUpdate about now, a lifetime within crl_validity. */
static int check_crl(const struct ca_key *ca, X509_CRL *crl, char *why, size_t n)
{
	int64_t now = fg_now(), tu = asn1_time(X509_CRL_get0_lastUpdate(crl)),
		nu = asn1_time(X509_CRL_get0_nextUpdate(crl));

	if (X509_CRL_get_version(crl) != X509_CRL_VERSION_2 ||
	    X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca->cert)) != 0) {
		snprintf(why, n, "not a v2 CRL of this CA");
		return -1;
	}
	if (tu == INT64_MIN || nu == INT64_MIN || tu > now + SKEW || tu < now - SKEW) {
		snprintf(why, n, "thisUpdate is not now (or nextUpdate is missing)");
		return -1;
	}
	if (nu <= tu || nu - tu > ca->crl_validity + SKEW) {
		snprintf(why, n, "a CRL lifetime of %lld s exceeds backend %s's crl_validity of %lld s",
			 (long long)(nu - tu), ca->backend, (long long)ca->crl_validity);
		return -1;
	}
	int has_number = 0;
	for (int i = 0; i < X509_CRL_get_ext_count(crl); i++) {
		int nid = OBJ_obj2nid(X509_EXTENSION_get_object(X509_CRL_get_ext(crl, i)));
		if (nid == NID_crl_number) {
			has_number = 1;
		} else if (nid == NID_authority_key_identifier) {
			AUTHORITY_KEYID *ak = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, NULL, NULL);
			int ok = ak != NULL && ak->keyid != NULL && ASN1_OCTET_STRING_cmp(ak->keyid, ca->ski) == 0;
			AUTHORITY_KEYID_free(ak);
			if (!ok) {
				snprintf(why, n, "the CRL's authorityKeyIdentifier is not this CA's");
				return -1;
			}
		} else {
			snprintf(why, n, "the CRL carries an extension other than cRLNumber and authorityKeyIdentifier");
			return -1;
		}
	}
	if (!has_number) {
		snprintf(why, n, "the CRL has no cRLNumber");
		return -1;
	}
	STACK_OF(X509_REVOKED) *rev = X509_CRL_get_REVOKED(crl);
	for (int i = 0; i < sk_X509_REVOKED_num(rev); i++) {
		const X509_REVOKED *r = sk_X509_REVOKED_value(rev, i);
		for (int j = 0; j < X509_REVOKED_get_ext_count(r); j++)
			if (OBJ_obj2nid(X509_EXTENSION_get_object(X509_REVOKED_get_ext(r, j))) != NID_crl_reason) {
				snprintf(why, n, "a CRL entry carries an extension other than a reason code");
				return -1;
			}
	}
	return 0;
}

/* Is keyhash (in digest mdo) the hash of ca's public key? */
static int ocsp_key_is_ca(const struct ca_key *ca, const ASN1_OBJECT *mdo, const ASN1_OCTET_STRING *keyhash)
{
	const EVP_MD *md = mdo ? EVP_get_digestbyobj(mdo) : NULL;
	const ASN1_BIT_STRING *key = X509_get0_pubkey_bitstr(ca->cert);
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned int hl = 0;

	if (md == NULL || keyhash == NULL || key == NULL ||
	    EVP_Digest(ASN1_STRING_get0_data(key), (size_t)ASN1_STRING_length(key), h, &hl, md, NULL) != 1)
		return 0;
	return (int)hl == ASN1_STRING_length(keyhash) && memcmp(h, ASN1_STRING_get0_data(keyhash), hl) == 0;
}

/* A BasicOCSPResponse of ca: every answer about a certificate of this
 * CA's key, thisUpdate about now, a lifetime within ocsp_validity, no
 * extension but the nonce. */
static int check_ocsp(const struct ca_key *ca, OCSP_BASICRESP *bs, char *why, size_t n)
{
	int64_t now = fg_now();
	int count = OCSP_resp_count(bs);

	if (count <= 0 || count > 64) {
		snprintf(why, n, "an OCSP response of %d answers", count);
		return -1;
	}
	for (int i = 0; i < OCSP_BASICRESP_get_ext_count(bs); i++)
		if (OBJ_obj2nid(X509_EXTENSION_get_object(OCSP_BASICRESP_get_ext(bs, i))) != NID_id_pkix_OCSP_Nonce) {
			snprintf(why, n, "the OCSP response carries an extension other than the nonce");
			return -1;
		}
	for (int i = 0; i < count; i++) {
		OCSP_SINGLERESP *one = OCSP_resp_get0(bs, i);
		const OCSP_CERTID *cid = one ? OCSP_SINGLERESP_get0_id(one) : NULL;
		ASN1_OBJECT *mdo = NULL;
		ASN1_OCTET_STRING *kh = NULL;
		ASN1_GENERALIZEDTIME *rev = NULL, *tu = NULL, *nu = NULL;
		int reason = 0;

		if (cid == NULL || OCSP_id_get0_info(NULL, &mdo, &kh, NULL, (OCSP_CERTID *)cid) != 1 ||
		    !ocsp_key_is_ca(ca, mdo, kh)) {
			snprintf(why, n, "OCSP answer %d is about a certificate of another CA key", i);
			return -1;
		}
		if (OCSP_single_get0_status(one, &reason, &rev, &tu, &nu) < 0 ||
		    OCSP_SINGLERESP_get_ext_count(one) != 0) {
			snprintf(why, n, "OCSP answer %d is malformed or carries extensions", i);
			return -1;
		}
		int64_t t = asn1_time(tu), u = asn1_time(nu);
		if (t == INT64_MIN || u == INT64_MIN || t < now - SKEW || t > now + SKEW || u <= t ||
		    u - t > ca->ocsp_validity + SKEW) {
			snprintf(why, n, "OCSP answer %d has a lifetime outside backend %s's ocsp_validity of %lld s (or a thisUpdate that is not now)",
				 i, ca->backend, (long long)ca->ocsp_validity);
			return -1;
		}
	}
	return 0;
}

/* ---- one request ---- */

/* Sign c's to-be-signed part, in its received encoding, with ca's key
 * through a copy of the prepared context; the outer AlgorithmIdentifier
 * and the signature are set, the TBS is not touched (its algorithm was
 * checked to be this key's). 0 or -1. */
static int sign_cert(const struct ca_key *ca, FG_CERT *c)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	int ok = m != NULL && EVP_MD_CTX_copy_ex(m, ca->tmpl) == 1 &&
		 ASN1_item_sign_ctx(ASN1_ITEM_rptr(FG_TBS), NULL, c->sigalg, c->signature, c->tbs, m) > 0;
	EVP_MD_CTX_free(m);
	return ok ? 0 : -1;
}

static struct ca_key *find_ca(struct signer *s, const char *backend, uint8_t *idx)
{
	for (size_t i = 0; i < s->ncas; i++)
		if (strcmp(s->cas[i].backend, backend ? backend : "") == 0) {
			*idx = (uint8_t)i;
			return &s->cas[i];
		}
	return NULL;
}

/* Fill res->der with a malloc'd copy of der. */
static int set_der(Fgsigner__Result *res, const unsigned char *der, int len)
{
	res->der.data = malloc(len > 0 ? (size_t)len : 1);
	if (res->der.data == NULL)
		return -1;
	memcpy(res->der.data, der, (size_t)len);
	res->der.len = (size_t)len;
	return 0;
}

/* Serve one item into res (status, der or reason). */
static void serve_item(struct signer *s, const Fgsigner__Item *it, Fgsigner__Result *res, char *why,
		       size_t n)
{
	uint8_t ci = 0;
	struct ca_key *ca = find_ca(s, it->backend, &ci);
	const unsigned char *p = it->der.data;
	unsigned char *out = NULL;
	int len = -1;

	res->id = it->id;
	res->status = FGSIGNER__STATUS__STATUS_REFUSED;
	why[0] = 0;
	if (ca == NULL) {
		snprintf(why, n, "backend '%s' has no key in the signer (only \"local\" backends do)",
			 it->backend ? it->backend : "");
		return;
	}
	if (it->der.len > LONG_MAX) {
		snprintf(why, n, "object too large");
		return;
	}
	switch (it->kind) {
	case FGSIGNER__KIND__KIND_ALGORITHM:
		if (set_der(res, ca->aid, ca->aidlen) != 0)
			goto oom;
		res->status = FGSIGNER__STATUS__STATUS_OK;
		return;
	case FGSIGNER__KIND__KIND_RESERVE: {
		struct serial_slot *sl;
		const char *h = it->serial ? it->serial : "";
		size_t hl = strlen(h);
		if (hl == 0 || hl >= sizeof sl->hex || strspn(h, "0123456789ABCDEF") != hl) {
			snprintf(why, n, "serial '%.48s' is not upper-case hex", h);
			return;
		}
		if ((sl = serial_find(s, ci, h)) == NULL)
			goto oom;
		if (sl->state == 0) {
			sl->state = 1;
			sl->ca = ci;
			fg_strlcpy(sl->hex, h, sizeof sl->hex);
			s->used++;
		}
		res->status = FGSIGNER__STATUS__STATUS_OK;
		return;
	}
	case FGSIGNER__KIND__KIND_CERT: {
		FG_CERT *c = d2i_FG_CERT(NULL, &p, (long)it->der.len);
		char hex[48];
		int nbytes = 0;
		unsigned char h[32];
		struct serial_slot *sl = NULL;

		if (c == NULL || p != it->der.data + it->der.len) {
			snprintf(why, n, "the object is not one DER certificate");
		} else if (serial_text(c->tbs->serial, hex, sizeof hex, &nbytes) != 0 || nbytes < SERIAL_MIN_BYTES) {
			snprintf(why, n, "the serial is not a positive number of at least %d bits", SERIAL_MIN_BYTES * 8);
		} else if ((sl = serial_find(s, ci, hex)) == NULL) {
			FG_CERT_free(c);
			goto oom;
		} else if (sl->state == 0) {
			snprintf(why, n, "serial %s was not recorded write-ahead (reserved) before signing", hex);
		} else if (EVP_Digest(it->der.data, it->der.len, h, NULL, tbs_md, NULL) != 1) {
			snprintf(why, n, "cannot hash the request");
		} else if (sl->state == 2 && memcmp(sl->tbs, h, sizeof h) != 0) {
			snprintf(why, n, "serial %s was already signed for another certificate", hex);
		} else if (check_cert(s, ca, it->profile, c->tbs, why, n) != 0) {
			/* why is set */
		} else if (sign_cert(ca, c) != 0 || (len = i2d_FG_CERT(c, &out)) <= 0) {
			res->status = FGSIGNER__STATUS__STATUS_ERROR;
			snprintf(why, n, "signing failed");
		} else {
			sl->state = 2;
			memcpy(sl->tbs, h, sizeof h);
		}
		FG_CERT_free(c);
		break;
	}
	case FGSIGNER__KIND__KIND_CRL: {
		X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)it->der.len);
		if (crl == NULL || p != it->der.data + it->der.len)
			snprintf(why, n, "the object is not one DER CRL");
		else if (check_crl(ca, crl, why, n) != 0)
			;
		else if (X509_CRL_sign(crl, ca->key, ca->md) <= 0 || (len = i2d_X509_CRL(crl, &out)) <= 0) {
			res->status = FGSIGNER__STATUS__STATUS_ERROR;
			snprintf(why, n, "signing failed");
		}
		X509_CRL_free(crl);
		break;
	}
	case FGSIGNER__KIND__KIND_OCSP: {
		OCSP_BASICRESP *bs = d2i_OCSP_BASICRESP(NULL, &p, (long)it->der.len);
		if (bs == NULL || p != it->der.data + it->der.len)
			snprintf(why, n, "the object is not one DER BasicOCSPResponse");
		else if (check_ocsp(ca, bs, why, n) != 0)
			;
		else if (OCSP_basic_sign(bs, ca->cert, ca->key, ca->md, NULL, 0) != 1 ||
			 (len = i2d_OCSP_BASICRESP(bs, &out)) <= 0) {
			res->status = FGSIGNER__STATUS__STATUS_ERROR;
			snprintf(why, n, "signing failed");
		}
		OCSP_BASICRESP_free(bs);
		break;
	}
	default:
		snprintf(why, n, "unknown item kind %d", (int)it->kind);
		break;
	}
	ERR_clear_error();
	if (len > 0 && why[0] == 0) {
		if (set_der(res, out, len) != 0) {
			OPENSSL_free(out);
			goto oom;
		}
		res->status = FGSIGNER__STATUS__STATUS_OK;
		if (it->kind == FGSIGNER__KIND__KIND_CERT)
			s->signed_n++;
	} else if (res->status == FGSIGNER__STATUS__STATUS_REFUSED) {
		s->refused_n++;
	}
	OPENSSL_free(out);
	return;
oom:
	res->status = FGSIGNER__STATUS__STATUS_ERROR;
	snprintf(why, n, "out of memory in the signer");
}

/* Answer one message: a Reply with a Result per item, or with error set
 * when the request is dropped whole. -1 when the reply cannot be sent. */
/* The packed reply to one message (malloc'd into *outp). 0, or -1 out of
 * memory. */
static int build_reply(struct signer *s, const struct signer_hdr *h, const unsigned char *body,
		       unsigned char **outp, size_t *outlen)
{
	Fgsigner__Request *req = NULL;
	Fgsigner__Reply rep = FGSIGNER__REPLY__INIT;
	Fgsigner__Result *res = NULL, **resp = NULL;
	char (*why)[512] = NULL;
	char error[256] = "";
	unsigned char *out = NULL;
	size_t n = 0;
	int rc = -1;

	if (h->type == SIGNER_MSG_TEST_FORBIDDEN && (s->flags & SIGNER_TEST_HOOKS)) {
		fg_warn("signer", NULL, "test hook: attempting a forbidden system call (socket); the kernel should kill this process");
		int fd = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
		fg_err("signer", NULL, "test hook: socket() returned %d: the seccomp filter did not stop it", fd);
		_exit(7);
	}
	if (h->type != SIGNER_MSG_REQUEST) {
		snprintf(error, sizeof error, "message %u has type %u, not a request; dropped", (unsigned)h->id,
			 (unsigned)h->type);
	} else if ((req = fgsigner__request__unpack(NULL, h->len, body)) == NULL) {
		snprintf(error, sizeof error, "message %u (%u bytes) is not a signer Request; dropped", (unsigned)h->id,
			 (unsigned)h->len);
	} else if (req->n_items == 0 || req->n_items > SIGNER_MAX_ITEMS) {
		snprintf(error, sizeof error, "message %u has %zu items (1 to %d allowed); dropped", (unsigned)h->id,
			 req->n_items, SIGNER_MAX_ITEMS);
	}
	if (error[0]) {
		fg_warn("signer", NULL, "%s", error);
		rep.error = error;
	} else {
		n = req->n_items;
		res = calloc(n, sizeof *res);
		resp = calloc(n, sizeof *resp);
		why = calloc(n, sizeof *why);
		if (res == NULL || resp == NULL || why == NULL) {
			rep.error = "out of memory in the signer";
			n = 0;
		}
		for (size_t i = 0; i < n; i++) {
			fgsigner__result__init(&res[i]);
			serve_item(s, req->items[i], &res[i], why[i], sizeof why[i]);
			if (why[i][0])
				res[i].reason = why[i];
			resp[i] = &res[i];
		}
		rep.n_results = n;
		rep.results = resp;
	}
	size_t len = fgsigner__reply__get_packed_size(&rep);
	if ((out = malloc(len ? len : 1)) != NULL) {
		fgsigner__reply__pack(&rep, out);
		*outp = out;
		*outlen = len;
		rc = 0;
	}
	for (size_t i = 0; i < n; i++)
		free(res[i].der.data);
	free(res);
	free(resp);
	free(why);
	fgsigner__request__free_unpacked(req, NULL);
	return rc;
}

/* Answer one message on SIGNER_FD. 0, or -1 when the reply cannot be
 * sent (the daemon is gone). */
static int serve(struct signer *s, const struct signer_hdr *h, const unsigned char *body)
{
	unsigned char *out = NULL;
	size_t len = 0;
	int rc = -1;
	if (build_reply(s, h, body, &out, &len) == 0)
		rc = signer_ipc_send(SIGNER_FD, SIGNER_MSG_REPLY, h->id, out, len);
	free(out);
	return rc;
}

/* The keys of every local backend into s->cas, and the digest that tells
 * one to-be-signed certificate from another (fetched once: an implicit
 * fetch per call costs a lookup). 0, or -1 with err. */
static int load_keys(struct signer *s, char *err, size_t errlen)
{
	const struct gw_config *cfg = s->cfg;
	if (tbs_md == NULL && (tbs_md = EVP_MD_fetch(NULL, "SHA2-256", NULL)) == NULL) {
		fg_seterr(err, errlen, "cannot fetch SHA-256 from OpenSSL's default provider");
		return -1;
	}
	s->ncas = signer_key_count(cfg);
	s->cas = calloc(s->ncas ? s->ncas : 1, sizeof *s->cas);
	if (s->cas == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0, k = 0; i < cfg->nbackends; i++)
		if (strcmp(cfg->backends[i].plugin, "local") == 0 &&
		    load_ca(cfg, &cfg->backends[i], &s->cas[k++], err, errlen) != 0)
			return -1;
	return 0;
}

#ifdef FG_INPROCESS_SIGNER
/* The benchmark comparison build (meson -Dinprocess_signer=true): the
 * same checks and signatures, called in the daemon, no process. */
struct signer *signer_inprocess_new(const struct gw_config *cfg, char *err, size_t errlen)
{
	struct signer *s = calloc(1, sizeof *s);
	if (s == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	s->cfg = cfg;
	if (load_keys(s, err, errlen) != 0)
		return NULL;    /* a failed start: the daemon exits */
	return s;
}

int signer_inprocess_call(struct signer *s, const unsigned char *body, size_t len, unsigned char **reply,
			  size_t *replylen)
{
	struct signer_hdr h = { SIGNER_IPC_MAGIC, SIGNER_IPC_VERSION, SIGNER_MSG_REQUEST, (uint32_t)len, 0 };
	return build_reply(s, &h, body, reply, replylen);
}
#endif

/* ---- the process ---- */

/* Everything after the fork; never returns. */
static void signer_main(const struct gw_config *cfg, unsigned flags, int sock, pid_t parent)
{
	struct signer s = { .cfg = cfg, .flags = flags };
	char err[1024] = "";
	uid_t uid = 0;
	int mode = config_sandbox_mode(cfg);

	/* 1: the socket at SIGNER_FD, stderr kept, everything else closed. */
	if (sock != SIGNER_FD && (dup2(sock, SIGNER_FD) != SIGNER_FD || close(sock) != 0)) {
		fg_err("signer", NULL, "cannot move the signer socket: %s", strerror(errno));
		_exit(3);
	}
	if (syscall(SYS_close_range, SIGNER_FD + 1, ~0u, 0) != 0 || fcntl(SIGNER_FD, F_SETFD, 0) != 0) {
		fg_err("signer", NULL, "cannot close inherited descriptors: %s", strerror(errno));
		_exit(3);
	}
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0 || dup2(devnull, 0) != 0 || dup2(devnull, 1) != 1) {
		fg_err("signer", NULL, "cannot point stdin and stdout at /dev/null: %s", strerror(errno));
		_exit(3);
	}
	close(devnull);
	fg_log_stderr_only();
	prctl(PR_SET_NAME, "fg-signer", 0, 0, 0);

	/* 2: the keys. */
	if (load_keys(&s, err, sizeof err) != 0) {
		fg_err("signer", NULL, "%s", err);
		_exit(4);
	}

	/* 3: who we are, and what we can still become. */
	struct rlimit nocore = { 0, 0 };
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &nocore) != 0 ||
	    drop_privileges(cfg, &uid, err, sizeof err) != 0 ||
	    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != parent) {
		fg_err("signer", NULL, "%s", err[0] ? err : "cannot make the process undumpable or tie it to its parent");
		_exit(5);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		fg_err("signer", NULL, "cannot set no_new_privs: %s", strerror(errno));
		_exit(5);
	}
	/* Warm up what the loop will use before the filter closes the rest
	 * (OpenSSL's lazily loaded tables, the log's time formatting). */
	{
		unsigned char rnd[16];
		if (RAND_bytes(rnd, sizeof rnd) != 1) {
			fg_err("signer", NULL, "the random number generator cannot be seeded");
			_exit(5);
		}
		OPENSSL_cleanse(rnd, sizeof rnd);
	}

	/* 4: the filter. */
	if (mode == SANDBOX_OFF) {
		fg_warn("signer", NULL, "sandbox = \"off\": the signer runs without its seccomp filter");
	} else if (apply_seccomp(err, sizeof err) != 0) {
		if (mode == SANDBOX_REQUIRED) {
			fg_err("signer", NULL, "%s; the kernel must support seccomp filters (or set sandbox = \"best-effort\" in fleetgated.conf, which runs the signer unconfined)",
			       err);
			_exit(6);
		}
		fg_warn("signer", NULL, "%s; sandbox = \"best-effort\": the signer runs unconfined", err);
	}
	fg_info("signer", NULL, "sandbox: signer pid %d holds %zu CA key%s; uid %u; no_new_privs; seccomp %s (%zu system calls)",
		(int)getpid(), s.ncas, s.ncas == 1 ? "" : "s", (unsigned)uid,
		mode == SANDBOX_OFF ? "off" : "on", N_SYSCALLS);

	/* 5: serve. */
	static struct signer_rbuf rb;
	for (;;) {
		struct signer_hdr h;
		unsigned char *body = NULL;
		int r = signer_ipc_recv_buf(SIGNER_FD, &rb, SIGNER_MSG_MAX, &h, &body, err, sizeof err);
		if (r == 1)
			_exit(0);
		if (r < 0) {
			/* The stream cannot be trusted past a bad header: say
			 * why and stop; the monitor starts a fresh signer. */
			fg_err("signer", NULL, "%s; closing the signer socket", err);
			_exit(2);
		}
		if (serve(&s, &h, body) != 0) {
			free(body);
			_exit(0);      /* the daemon went away mid-reply */
		}
		free(body);
	}
}

pid_t signer_spawn(const struct gw_config *cfg, unsigned flags, int *fd, char *err, size_t errlen)
{
	int sv[2];
	pid_t parent = getpid(), pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		fg_seterr(err, errlen, "cannot make the signer socket pair: %s", strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fg_seterr(err, errlen, "cannot fork the signer process: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		close(sv[0]);
		signer_main(cfg, flags, sv[1], parent);
		_exit(1);
	}
	close(sv[1]);
	*fd = sv[0];
	return pid;
}
