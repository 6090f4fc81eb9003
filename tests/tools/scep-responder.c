/*
 * scep-responder: an RFC 8894 (SCEP) responder for fleetgate's integration
 * tests.
 *
 * This is a TEST responder, not a production CA. It follows the RFC 8894
 * message formats byte for byte (pkiMessage / CertRep as CMS SignedData
 * over a pkcsPKIEnvelope EnvelopedData, the SCEP authenticated attributes,
 * degenerate certs-only SignedData) and is used where the Debian micromdm
 * `scepserver` cannot do what a test needs: PENDING answers and polling
 * (CertPoll), an RA certificate, GetCert and GetCRL. It keeps no revocation
 * state, does no policy and its keys sit unencrypted in DIR.
 *
 * Build:
 *   cc -O2 -Wall -Wextra -o scep-responder tests/tools/scep-responder.c \
 *      $(pkg-config --cflags --libs libevent openssl)
 *
 * Usage:
 *   scep-responder --dir DIR --port PORT [--ra] [--pending N]
 *                  [--challenge SECRET] [--caps "AES\nSHA-256\n..."]
 *                  [--no-post] [--validity-days D]
 *
 * It listens on 127.0.0.1:PORT (any path; only the query matters), prints
 * "ready" on stdout once listening and exits 0 on SIGTERM/SIGINT.
 *
 * DIR holds ca.key/ca.crt (and ra.key/ra.crt with --ra), created on first
 * run and reused after, issued/<SERIALHEX>.der for every issued certificate
 * and pending/<transactionID> for every transaction answered PENDING, so a
 * restarted responder still knows them. A pending file is the text line
 * "pending COUNT\n" followed by the CSR DER, or "issued SERIALHEX\n" once
 * the certificate went out. Characters of the transactionID outside
 * [A-Za-z0-9._-] are written as %XX in the file name.
 *
 * Requests may use AES-128/192/256-CBC, DES-EDE3-CBC or (micromdm's client
 * still does) single DES-CBC, hence the OpenSSL legacy provider; a
 * SUCCESS envelope goes back in AES-256-CBC to an AES requester, else in
 * DES-EDE3-CBC.
 *
 * --pending N answers a new PKCSReq/RenewalReq PENDING for its first N
 * messages (the request is the first; each CertPoll, or a resent request
 * with the same transactionID, counts one more), then SUCCESS.
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* messageType values, RFC 8894 section 3.2.1.2 */
enum scep_msg_type {
	SCEP_CERTREP = 3,
	SCEP_RENEWALREQ = 17,
	SCEP_PKCSREQ = 19,
	SCEP_CERTPOLL = 20,
	SCEP_GETCERT = 21,
	SCEP_GETCRL = 22,
};

/* pkiStatus values, RFC 8894 section 3.2.1.3 */
enum scep_status {
	SCEP_SUCCESS = 0,
	SCEP_FAILURE = 2,
	SCEP_PENDING = 3,
};

/* failInfo values, RFC 8894 section 3.2.1.4 */
enum scep_fail {
	SCEP_BADALG = 0,
	SCEP_BADMESSAGECHECK = 1,
	SCEP_BADREQUEST = 2,
	SCEP_BADTIME = 3,
	SCEP_BADCERTID = 4,
};

#define DEFAULT_CAPS "AES\nPOSTPKIOperation\nRenewal\nSHA-256\nSCEPStandard\n"
/*
 * Without POST: SCEPStandard implies POSTPKIOperation (RFC 8894 3.5.2), and
 * micromdm's client POSTs when it sees either, so both go.
 */
#define DEFAULT_CAPS_NOPOST "AES\nRenewal\nSHA-256\n"
#define NONCE_LEN 16		/* senderNonce length, RFC 8894 3.2.1.5 */
#define TID_MAX 256

struct responder {
	const char *dir;	/* state directory */
	int port;		/* TCP port on 127.0.0.1 */
	int use_ra;		/* sign/decrypt with ra.key, GetCACert -> ca-ra */
	int pending;		/* PENDING answers per new transaction */
	const char *challenge;	/* required challengePassword, or NULL */
	char *caps;		/* GetCACaps body */
	int no_post;		/* refuse POST with 405 */
	int validity_days;	/* issued certificate lifetime, days */
	EVP_PKEY *ca_key;
	X509 *ca_cert;
	EVP_PKEY *ra_key;
	X509 *ra_cert;
};

/* One parsed pkiMessage. */
struct scep_req {
	PKCS7 *p7;			/* the pkiMessage, owned */
	X509 *signer;			/* borrowed from p7 */
	char tid[TID_MAX];		/* transactionID, 3.2.1.1 */
	int type;			/* messageType, 3.2.1.2 */
	unsigned char nonce[64];	/* senderNonce, 3.2.1.5 */
	int nonce_len;
	int cipher_nid;			/* content cipher of the envelope */
	unsigned char *content;		/* decrypted envelope content, owned */
	int content_len;
};

/* What to answer in a CertRep. */
struct certrep {
	int status;			/* enum scep_status */
	int fail;			/* enum scep_fail, on FAILURE */
	X509 *cert;			/* SUCCESS: certificate, owned */
	X509_CRL *crl;			/* SUCCESS for GetCRL, owned */
	char note[160];			/* for the log line */
};

/* A persisted enrolment transaction (DIR/pending/<tid>). */
enum txn_state { TXN_NONE, TXN_PENDING, TXN_ISSUED };
struct txn {
	int state;
	int count;			/* messages seen while pending */
	unsigned char *csr;		/* CSR DER while pending, owned */
	int csr_len;
	char serial[80];		/* hex serial once issued */
};

static int nid_msgtype, nid_status, nid_failinfo;
static int nid_snonce, nid_rnonce, nid_tid;

static void ssl_err(const char *what)
{
	unsigned long e;
	char buf[256];

	fprintf(stderr, "scep-responder: %s failed", what);
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		fprintf(stderr, ": %s", buf);
	}
	fputc('\n', stderr);
}

static int scep_nid(const char *oid, const char *sn, const char *ln)
{
	int nid = OBJ_txt2nid(oid);

	if (nid == NID_undef)
		nid = OBJ_create(oid, sn, ln);
	return nid;
}

static int scep_nids_init(void)
{
	nid_msgtype = scep_nid("2.16.840.1.113733.1.9.2", "messageType",
			       "SCEP messageType");
	nid_status = scep_nid("2.16.840.1.113733.1.9.3", "pkiStatus",
			      "SCEP pkiStatus");
	nid_failinfo = scep_nid("2.16.840.1.113733.1.9.4", "failInfo",
				"SCEP failInfo");
	nid_snonce = scep_nid("2.16.840.1.113733.1.9.5", "senderNonce",
			      "SCEP senderNonce");
	nid_rnonce = scep_nid("2.16.840.1.113733.1.9.6", "recipientNonce",
			      "SCEP recipientNonce");
	nid_tid = scep_nid("2.16.840.1.113733.1.9.7", "transactionID",
			   "SCEP transactionID");
	if (!nid_msgtype || !nid_status || !nid_failinfo || !nid_snonce ||
	    !nid_rnonce || !nid_tid) {
		ssl_err("OBJ_create for the SCEP attribute OIDs");
		return -1;
	}
	return 0;
}

/* ---- files ---- */

/* Read a whole file into a malloc'ed buffer (caller frees). 0 or -1. */
static int file_read(const char *path, unsigned char **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *p = NULL;
	size_t n = 0, cap = 0, r;

	if (!f)
		return -1;
	for (;;) {
		if (n == cap) {
			unsigned char *np = realloc(p, cap ? cap * 2 : 4096);

			if (!np)
				goto err;
			p = np;
			cap = cap ? cap * 2 : 4096;
		}
		r = fread(p + n, 1, cap - n, f);
		n += r;
		if (r == 0)
			break;
	}
	if (ferror(f))
		goto err;
	fclose(f);
	*buf = p;
	*len = n;
	return 0;
err:
	free(p);
	fclose(f);
	return -1;
}

/* Write atomically (tmp file + rename). 0 or -1 with errno. */
static int file_write(const char *path, const void *a, size_t alen,
		      const void *b, size_t blen, mode_t mode)
{
	char tmp[4096];
	int fd;
	FILE *f;
	int ok;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0)
		return -1;
	f = fdopen(fd, "wb");
	if (!f) {
		close(fd);
		return -1;
	}
	ok = fwrite(a, 1, alen, f) == alen;
	if (ok && blen)
		ok = fwrite(b, 1, blen, f) == blen;
	if (fclose(f) != 0)
		ok = 0;
	if (!ok || rename(tmp, path) != 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int mkdir_p(const char *path)
{
	if (mkdir(path, 0700) == 0 || errno == EEXIST)
		return 0;
	fprintf(stderr, "scep-responder: mkdir %s: %s\n", path,
		strerror(errno));
	return -1;
}

/* ---- keys and certificates ---- */

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -1;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* Set a random positive 16-byte serial. */
static int set_random_serial(X509 *x)
{
	unsigned char b[16];
	BIGNUM *bn = NULL;
	int ret = -1;

	if (RAND_bytes(b, sizeof(b)) != 1)
		return -1;
	b[0] = (b[0] & 0x7f) | 0x40;	/* positive, always 16 bytes */
	bn = BN_bin2bn(b, sizeof(b), NULL);
	if (bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		ret = 0;
	BN_free(bn);
	return ret;
}

/*
 * A new unsigned v3 certificate for pub with subject name, random serial
 * and validity now-60s .. now+days. Returned to the caller to free.
 */
static X509 *cert_skeleton(const X509_NAME *subject, EVP_PKEY *pub,
			   const X509_NAME *issuer, long days)
{
	X509 *x = X509_new();

	if (!x || !X509_set_version(x, X509_VERSION_3) ||
	    set_random_serial(x) != 0 ||
	    !X509_set_subject_name(x, subject) ||
	    !X509_set_issuer_name(x, issuer ? issuer : subject) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -60) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL) ||
	    !X509_set_pubkey(x, pub)) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static X509_NAME *name_cn(const char *cn)
{
	X509_NAME *n = X509_NAME_new();

	if (n && !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
					     (const unsigned char *)cn, -1,
					     -1, 0)) {
		X509_NAME_free(n);
		return NULL;
	}
	return n;
}

static int save_key_cert(const char *kpath, const char *cpath,
			 EVP_PKEY *key, X509 *cert)
{
	FILE *f;
	int fd, ok;

	fd = open(kpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f)
		goto err;
	ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	if (fclose(f) != 0 || !ok)
		goto err;
	f = fopen(cpath, "w");
	if (!f)
		goto err;
	ok = PEM_write_X509(f, cert);
	if (fclose(f) != 0 || !ok)
		goto err;
	return 0;
err:
	fprintf(stderr, "scep-responder: cannot write %s / %s: %s\n",
		kpath, cpath, strerror(errno));
	return -1;
}

static int load_key_cert(const char *kpath, const char *cpath,
			 EVP_PKEY **key, X509 **cert)
{
	FILE *f;

	f = fopen(kpath, "r");
	if (!f)
		return -1;
	*key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	f = fopen(cpath, "r");
	if (!f)
		return -1;
	*cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!*key || !*cert) {
		ssl_err(kpath);
		return -1;
	}
	return 0;
}

/*
 * Load DIR/<base>.key and DIR/<base>.crt, or create them: a self-signed CA
 * when issuer is NULL, else an RA certificate issued by the CA.
 */
static int keypair_init(struct responder *r, const char *base,
			const char *cn, int is_ca, EVP_PKEY **key,
			X509 **cert)
{
	char kpath[4096], cpath[4096];
	X509_NAME *name = NULL;
	X509 *issuer = is_ca ? NULL : r->ca_cert;
	EVP_PKEY *sign;
	int ret = -1;

	snprintf(kpath, sizeof(kpath), "%s/%s.key", r->dir, base);
	snprintf(cpath, sizeof(cpath), "%s/%s.crt", r->dir, base);
	if (access(kpath, R_OK) == 0 && access(cpath, R_OK) == 0)
		return load_key_cert(kpath, cpath, key, cert);

	*key = EVP_RSA_gen(2048);
	name = name_cn(cn);
	if (!*key || !name)
		goto out;
	*cert = cert_skeleton(name, *key,
			      issuer ? X509_get_subject_name(issuer) : NULL,
			      3650);
	if (!*cert)
		goto out;
	sign = is_ca ? *key : r->ca_key;
	if (is_ca) {
		if (add_ext(*cert, NULL, NID_basic_constraints,
			    "critical,CA:TRUE") ||
		    add_ext(*cert, NULL, NID_key_usage,
			    "critical,keyCertSign,cRLSign") ||
		    add_ext(*cert, NULL, NID_subject_key_identifier, "hash"))
			goto out;
	} else {
		if (add_ext(*cert, issuer, NID_basic_constraints, "CA:FALSE") ||
		    add_ext(*cert, issuer, NID_key_usage,
			    "critical,digitalSignature,keyEncipherment") ||
		    add_ext(*cert, issuer, NID_subject_key_identifier,
			    "hash") ||
		    add_ext(*cert, issuer, NID_authority_key_identifier,
			    "keyid:always"))
			goto out;
	}
	if (!X509_sign(*cert, sign, EVP_sha256()))
		goto out;
	ret = save_key_cert(kpath, cpath, *key, *cert);
	if (ret == 0)
		fprintf(stderr, "scep-responder: created %s\n", cpath);
out:
	if (ret != 0)
		ssl_err("creating the CA/RA key pair");
	X509_NAME_free(name);
	return ret;
}

/* ---- issuing ---- */

/* Copy subjectAltName from the CSR's extensionRequest, if any. */
static int copy_san(X509 *x, X509_REQ *req)
{
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	int i, ret = 0;

	for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);

		if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) ==
		    NID_subject_alt_name && !X509_add_ext(x, e, -1))
			ret = -1;
	}
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return ret;
}

/*
 * Issue a client certificate for a (verified) CSR and store it in
 * DIR/issued/<SERIAL>.der. Returns the certificate (caller frees) or NULL.
 */
static X509 *issue_cert(struct responder *r, X509_REQ *req)
{
	EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
	X509 *x = NULL;
	unsigned char *der = NULL;
	char path[4096], *hex = NULL;
	BIGNUM *bn = NULL;
	int len;

	x = cert_skeleton(X509_REQ_get_subject_name(req), pub,
			  X509_get_subject_name(r->ca_cert),
			  r->validity_days);
	if (!x || add_ext(x, r->ca_cert, NID_basic_constraints, "CA:FALSE") ||
	    add_ext(x, r->ca_cert, NID_key_usage,
		    "critical,digitalSignature,keyEncipherment") ||
	    add_ext(x, r->ca_cert, NID_ext_key_usage, "clientAuth") ||
	    add_ext(x, r->ca_cert, NID_subject_key_identifier, "hash") ||
	    add_ext(x, r->ca_cert, NID_authority_key_identifier,
		    "keyid:always") ||
	    copy_san(x, req) != 0 ||
	    !X509_sign(x, r->ca_key, EVP_sha256()))
		goto err;
	bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	hex = bn ? BN_bn2hex(bn) : NULL;
	len = i2d_X509(x, &der);
	if (!hex || len <= 0)
		goto err;
	snprintf(path, sizeof(path), "%s/issued/%s.der", r->dir, hex);
	if (file_write(path, der, len, NULL, 0, 0644) != 0) {
		fprintf(stderr, "scep-responder: write %s: %s\n", path,
			strerror(errno));
		goto err;
	}
	OPENSSL_free(hex);
	OPENSSL_free(der);
	BN_free(bn);
	return x;
err:
	ssl_err("issuing a certificate");
	OPENSSL_free(hex);
	OPENSSL_free(der);
	BN_free(bn);
	X509_free(x);
	return NULL;
}

static X509 *load_issued(struct responder *r, const char *hex)
{
	char path[4096];
	unsigned char *buf;
	const unsigned char *p;
	size_t len;
	X509 *x;

	snprintf(path, sizeof(path), "%s/issued/%s.der", r->dir, hex);
	if (file_read(path, &buf, &len) != 0)
		return NULL;
	p = buf;
	x = d2i_X509(NULL, &p, (long)len);
	free(buf);
	return x;
}

static char *serial_hex(const ASN1_INTEGER *serial)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;

	BN_free(bn);
	return hex;
}

/* A CA-signed CRL, empty, valid one day. Caller frees. */
static X509_CRL *make_crl(struct responder *r)
{
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *now = ASN1_TIME_new(), *next = ASN1_TIME_new();
	ASN1_INTEGER *num = ASN1_INTEGER_new();
	int ok;

	ok = crl && now && next && num &&
	     X509_CRL_set_version(crl, X509_CRL_VERSION_2) &&
	     X509_CRL_set_issuer_name(crl,
				      X509_get_subject_name(r->ca_cert)) &&
	     X509_gmtime_adj(now, 0) && X509_gmtime_adj(next, 86400) &&
	     X509_CRL_set1_lastUpdate(crl, now) &&
	     X509_CRL_set1_nextUpdate(crl, next) &&
	     ASN1_INTEGER_set_int64(num, (int64_t)time(NULL)) &&
	     X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0) &&
	     X509_CRL_sort(crl) &&
	     X509_CRL_sign(crl, r->ca_key, EVP_sha256());
	ASN1_TIME_free(now);
	ASN1_TIME_free(next);
	ASN1_INTEGER_free(num);
	if (!ok) {
		ssl_err("building the CRL");
		X509_CRL_free(crl);
		return NULL;
	}
	return crl;
}

/* ---- PKCS#7 ---- */

/*
 * DER of a degenerate certs-only SignedData (content absent, no signers)
 * holding certs and crl. *der is the caller's (OPENSSL_free). Length or -1.
 */
static int degenerate_der(X509 *c1, X509 *c2, X509_CRL *crl,
			  unsigned char **der)
{
	PKCS7 *p7 = PKCS7_new();
	int len = -1;

	*der = NULL;
	if (!p7 || !PKCS7_set_type(p7, NID_pkcs7_signed))
		goto out;
	/* Like openssl crl2pkcs7: contentType data, content absent. */
	p7->d.sign->contents->type = OBJ_nid2obj(NID_pkcs7_data);
	if ((c1 && !PKCS7_add_certificate(p7, c1)) ||
	    (c2 && !PKCS7_add_certificate(p7, c2)) ||
	    (crl && !PKCS7_add_crl(p7, crl)))
		goto out;
	len = i2d_PKCS7(p7, der);
out:
	PKCS7_free(p7);
	return len;
}

static int add_str_attr(PKCS7_SIGNER_INFO *si, int nid, int type,
			const void *data, int len)
{
	ASN1_STRING *s = ASN1_STRING_type_new(type);

	if (!s || !ASN1_STRING_set(s, data, len) ||
	    !PKCS7_add_signed_attribute(si, nid, type, s)) {
		ASN1_STRING_free(s);
		return -1;
	}
	return 0;
}

/*
 * pkcsPKIEnvelope for a SUCCESS CertRep: EnvelopedData to the requester's
 * signer certificate, with the request's cipher, around a degenerate
 * SignedData with the certificate or the CRL. DER in *der (OPENSSL_free).
 */
static int envelope_der(struct scep_req *q, struct certrep *rep,
			unsigned char **der)
{
	const EVP_CIPHER *cipher;
	unsigned char *inner = NULL;
	STACK_OF(X509) *rcpt = sk_X509_new_null();
	PKCS7 *env = NULL;
	BIO *in = NULL;
	int innerlen, len = -1;

	/* AES-256 to an AES requester, else 3DES (never single DES back). */
	switch (q->cipher_nid) {
	case NID_aes_128_cbc:
	case NID_aes_192_cbc:
	case NID_aes_256_cbc:
		cipher = EVP_aes_256_cbc();
		break;
	default:
		cipher = EVP_des_ede3_cbc();
	}
	innerlen = degenerate_der(rep->cert, NULL, rep->crl, &inner);
	if (innerlen <= 0 || !rcpt || !sk_X509_push(rcpt, q->signer))
		goto out;
	in = BIO_new_mem_buf(inner, innerlen);
	env = in ? PKCS7_encrypt(rcpt, in, cipher, PKCS7_BINARY) : NULL;
	if (env)
		len = i2d_PKCS7(env, der);
out:
	if (len <= 0)
		ssl_err("building the pkcsPKIEnvelope");
	PKCS7_free(env);
	BIO_free(in);
	sk_X509_free(rcpt);
	OPENSSL_free(inner);
	return len;
}

/*
 * Build a CertRep pkiMessage (RFC 8894 3.3.2) answering q. Signed with
 * SHA-256 by the RA (with --ra) or CA key, carrying the signer certificate.
 * For SUCCESS the content is the pkcsPKIEnvelope, else empty data.
 * Returns the DER length, *out is the caller's (OPENSSL_free), or -1.
 */
static int certrep_der(struct responder *r, struct scep_req *q,
		       struct certrep *rep, unsigned char **out)
{
	EVP_PKEY *key = r->use_ra ? r->ra_key : r->ca_key;
	X509 *cert = r->use_ra ? r->ra_cert : r->ca_cert;
	unsigned char *env = NULL, nonce[NONCE_LEN];
	PKCS7_SIGNER_INFO *si;
	PKCS7 *p7 = NULL;
	BIO *bio = NULL;
	char num[16];
	int envlen = 0, len = -1;

	*out = NULL;
	if (rep->status == SCEP_SUCCESS) {
		envlen = envelope_der(q, rep, &env);
		if (envlen <= 0)
			return -1;
	}
	p7 = PKCS7_new();
	if (!p7 || !PKCS7_set_type(p7, NID_pkcs7_signed) ||
	    RAND_bytes(nonce, sizeof(nonce)) != 1)
		goto out;
	si = PKCS7_add_signature(p7, cert, key, EVP_sha256());
	if (!si || !PKCS7_add_certificate(p7, cert) ||
	    !PKCS7_add_attrib_content_type(si, NULL) ||
	    add_str_attr(si, nid_msgtype, V_ASN1_PRINTABLESTRING, "3", 1) ||
	    add_str_attr(si, nid_tid, V_ASN1_PRINTABLESTRING, q->tid,
			 (int)strlen(q->tid)) ||
	    add_str_attr(si, nid_snonce, V_ASN1_OCTET_STRING, nonce,
			 sizeof(nonce)))
		goto out;
	snprintf(num, sizeof(num), "%d", rep->status);
	if (add_str_attr(si, nid_status, V_ASN1_PRINTABLESTRING, num,
			 (int)strlen(num)))
		goto out;
	snprintf(num, sizeof(num), "%d", rep->fail);
	if (rep->status == SCEP_FAILURE &&
	    add_str_attr(si, nid_failinfo, V_ASN1_PRINTABLESTRING, num,
			 (int)strlen(num)))
		goto out;
	if (q->nonce_len > 0 &&
	    add_str_attr(si, nid_rnonce, V_ASN1_OCTET_STRING, q->nonce,
			 q->nonce_len))
		goto out;
	if (!PKCS7_content_new(p7, NID_pkcs7_data))
		goto out;
	bio = PKCS7_dataInit(p7, NULL);
	if (!bio || (envlen > 0 && BIO_write(bio, env, envlen) != envlen) ||
	    BIO_flush(bio) != 1 || !PKCS7_dataFinal(p7, bio))
		goto out;
	len = i2d_PKCS7(p7, out);
out:
	if (len <= 0)
		ssl_err("building the CertRep");
	BIO_free_all(bio);
	PKCS7_free(p7);
	OPENSSL_free(env);
	return len;
}

/* ---- request parsing ---- */

/* Copy a string-valued signed attribute. 0, or -1 if absent/wrong. */
static int attr_bytes(PKCS7_SIGNER_INFO *si, int nid, int want_octets,
		      unsigned char *buf, int bufsz, int *len)
{
	ASN1_TYPE *t = PKCS7_get_signed_attribute(si, nid);
	const ASN1_STRING *s;

	if (!t)
		return -1;
	if (want_octets ? t->type != V_ASN1_OCTET_STRING :
	    (t->type != V_ASN1_PRINTABLESTRING &&
	     t->type != V_ASN1_UTF8STRING && t->type != V_ASN1_IA5STRING))
		return -1;
	s = t->value.asn1_string;
	if (ASN1_STRING_length(s) >= bufsz)
		return -1;
	memcpy(buf, ASN1_STRING_get0_data(s), ASN1_STRING_length(s));
	*len = ASN1_STRING_length(s);
	if (!want_octets)
		buf[*len] = '\0';
	return 0;
}

static void scep_req_free(struct scep_req *q)
{
	PKCS7_free(q->p7);
	free(q->content);
}

/*
 * Parse the outer SignedData of a pkiMessage: signer cert and the SCEP
 * attributes. Returns 0, or -1 with why in err (answer HTTP 400: without a
 * transactionID and a signer there is no CertRep to send).
 */
static int req_parse_outer(struct scep_req *q, const unsigned char *der,
			   size_t len, char *err, size_t errsz)
{
	const unsigned char *p = der;
	STACK_OF(PKCS7_SIGNER_INFO) *sis;
	STACK_OF(X509) *signers;
	PKCS7_SIGNER_INFO *si;
	char type[16];
	int n;

	q->p7 = d2i_PKCS7(NULL, &p, (long)len);
	if (!q->p7 || !PKCS7_type_is_signed(q->p7)) {
		snprintf(err, errsz, "pkiMessage is not a PKCS#7 SignedData");
		return -1;
	}
	sis = PKCS7_get_signer_info(q->p7);
	si = sk_PKCS7_SIGNER_INFO_num(sis) == 1 ?
	     sk_PKCS7_SIGNER_INFO_value(sis, 0) : NULL;
	if (!si) {
		snprintf(err, errsz, "pkiMessage needs exactly one signer");
		return -1;
	}
	if (attr_bytes(si, nid_tid, 0, (unsigned char *)q->tid,
		       sizeof(q->tid), &n) != 0) {
		snprintf(err, errsz, "pkiMessage has no transactionID");
		return -1;
	}
	q->type = -1;
	if (attr_bytes(si, nid_msgtype, 0, (unsigned char *)type,
		       sizeof(type), &n) == 0)
		q->type = atoi(type);
	if (attr_bytes(si, nid_snonce, 1, q->nonce, sizeof(q->nonce),
		       &q->nonce_len) != 0)
		q->nonce_len = 0;
	signers = PKCS7_get0_signers(q->p7, NULL, 0);
	q->signer = sk_X509_num(signers) == 1 ? sk_X509_value(signers, 0) :
		    NULL;
	sk_X509_free(signers);
	if (!q->signer) {
		ERR_clear_error();
		snprintf(err, errsz, "pkiMessage does not carry its signer "
			 "certificate");
		return -1;
	}
	return 0;
}

/*
 * Verify the signature (signer need not chain: PKCS7_NOVERIFY) and decrypt
 * the pkcsPKIEnvelope into q->content. Returns 0, or a failInfo value.
 */
static int req_open_envelope(struct responder *r, struct scep_req *q,
			     char *err, size_t errsz)
{
	BIO *signed_content = BIO_new(BIO_s_mem());
	BIO *plain = BIO_new(BIO_s_mem());
	const unsigned char *p;
	PKCS7 *env = NULL;
	char *data;
	long n;
	int ret = SCEP_BADREQUEST;

	if (!signed_content || !plain)
		goto out;
	if (PKCS7_verify(q->p7, NULL, NULL, NULL, signed_content,
			 PKCS7_NOVERIFY | PKCS7_NOCHAIN | PKCS7_BINARY) != 1) {
		snprintf(err, errsz, "signature verification failed");
		ret = SCEP_BADMESSAGECHECK;
		goto out;
	}
	n = BIO_get_mem_data(signed_content, &data);
	p = (const unsigned char *)data;
	env = d2i_PKCS7(NULL, &p, n);
	if (!env || !PKCS7_type_is_enveloped(env)) {
		snprintf(err, errsz, "content is not a pkcsPKIEnvelope");
		goto out;
	}
	q->cipher_nid = OBJ_obj2nid(env->d.enveloped->enc_data->algorithm->
				    algorithm);
	if (PKCS7_decrypt(env, r->use_ra ? r->ra_key : r->ca_key,
			  r->use_ra ? r->ra_cert : r->ca_cert, plain,
			  PKCS7_BINARY) != 1) {
		snprintf(err, errsz, "cannot decrypt the pkcsPKIEnvelope "
			 "(not encrypted to the %s certificate?)",
			 r->use_ra ? "RA" : "CA");
		goto out;
	}
	n = BIO_get_mem_data(plain, &data);
	q->content = malloc(n > 0 ? (size_t)n : 1);
	if (!q->content)
		goto out;
	memcpy(q->content, data, n);
	q->content_len = (int)n;
	ret = 0;
out:
	if (ret != 0)
		ERR_clear_error();
	PKCS7_free(env);
	BIO_free(signed_content);
	BIO_free(plain);
	return ret;
}

/* ---- transactions ---- */

static void txn_path(struct responder *r, const char *tid, char *buf,
		     size_t bufsz)
{
	size_t n = (size_t)snprintf(buf, bufsz, "%s/pending/", r->dir);

	for (; *tid && n + 4 < bufsz; tid++) {
		unsigned char c = (unsigned char)*tid;

		if (isalnum(c) || c == '.' || c == '_' || c == '-')
			buf[n++] = (char)c;
		else
			n += (size_t)snprintf(buf + n, bufsz - n, "%%%02X", c);
	}
	buf[n] = '\0';
}

static void txn_clear(struct txn *t)
{
	free(t->csr);
	memset(t, 0, sizeof(*t));
}

static void txn_load(struct responder *r, const char *tid, struct txn *t)
{
	char path[4096];
	unsigned char *buf, *nl;
	size_t len;

	memset(t, 0, sizeof(*t));
	txn_path(r, tid, path, sizeof(path));
	if (file_read(path, &buf, &len) != 0)
		return;
	nl = memchr(buf, '\n', len);
	if (nl && sscanf((char *)buf, "pending %d", &t->count) == 1) {
		t->csr_len = (int)(len - (size_t)(nl + 1 - buf));
		t->csr = malloc(t->csr_len ? (size_t)t->csr_len : 1);
		if (t->csr) {
			memcpy(t->csr, nl + 1, t->csr_len);
			t->state = TXN_PENDING;
		}
	} else if (nl && sscanf((char *)buf, "issued %79s", t->serial) == 1) {
		t->state = TXN_ISSUED;
	}
	free(buf);
}

static int txn_save(struct responder *r, const char *tid,
		    const struct txn *t)
{
	char path[4096], head[128];

	txn_path(r, tid, path, sizeof(path));
	if (t->state == TXN_PENDING)
		snprintf(head, sizeof(head), "pending %d\n", t->count);
	else
		snprintf(head, sizeof(head), "issued %s\n", t->serial);
	if (file_write(path, head, strlen(head), t->csr,
		       t->state == TXN_PENDING ? (size_t)t->csr_len : 0,
		       0600) != 0) {
		fprintf(stderr, "scep-responder: write %s: %s\n", path,
			strerror(errno));
		return -1;
	}
	return 0;
}

static void rep_fail(struct certrep *rep, int fail, const char *why)
{
	rep->status = SCEP_FAILURE;
	rep->fail = fail;
	snprintf(rep->note, sizeof(rep->note), "failInfo=%d (%s)", fail, why);
}

static void rep_issue(struct responder *r, X509_REQ *req,
		      struct certrep *rep)
{
	char *hex;

	rep->cert = issue_cert(r, req);
	if (!rep->cert) {
		rep_fail(rep, SCEP_BADREQUEST, "issuing failed");
		return;
	}
	rep->status = SCEP_SUCCESS;
	hex = serial_hex(X509_get0_serialNumber(rep->cert));
	snprintf(rep->note, sizeof(rep->note), "serial=%s", hex ? hex : "?");
	OPENSSL_free(hex);
}

/*
 * One more message on a pending transaction t (count already bumped):
 * PENDING while count <= --pending, else issue from the stored CSR and
 * remember the serial so later polls get the same certificate.
 */
static void txn_advance(struct responder *r, const char *tid, struct txn *t,
			struct certrep *rep)
{
	const unsigned char *p = t->csr;
	X509_REQ *req;
	char *hex;

	if (t->count <= r->pending) {
		txn_save(r, tid, t);
		rep->status = SCEP_PENDING;
		snprintf(rep->note, sizeof(rep->note), "pending %d/%d",
			 t->count, r->pending);
		return;
	}
	req = d2i_X509_REQ(NULL, &p, t->csr_len);
	if (!req) {
		rep_fail(rep, SCEP_BADREQUEST, "stored CSR unreadable");
		return;
	}
	rep_issue(r, req, rep);
	X509_REQ_free(req);
	if (!rep->cert)
		return;
	hex = serial_hex(X509_get0_serialNumber(rep->cert));
	if (hex) {
		txn_clear(t);
		t->state = TXN_ISSUED;
		snprintf(t->serial, sizeof(t->serial), "%s", hex);
		txn_save(r, tid, t);
	}
	OPENSSL_free(hex);
}

/* ---- operations ---- */

static int challenge_ok(X509_REQ *req, const char *secret)
{
	int i = X509_REQ_get_attr_by_NID(req, NID_pkcs9_challengePassword,
					 -1);
	X509_ATTRIBUTE *a = i >= 0 ? X509_REQ_get_attr(req, i) : NULL;
	ASN1_TYPE *t = a ? X509_ATTRIBUTE_get0_type(a, 0) : NULL;
	const ASN1_STRING *s;

	if (!t || (t->type != V_ASN1_PRINTABLESTRING &&
		   t->type != V_ASN1_UTF8STRING &&
		   t->type != V_ASN1_IA5STRING &&
		   t->type != V_ASN1_T61STRING &&
		   t->type != V_ASN1_BMPSTRING))
		return 0;
	s = t->value.asn1_string;
	return (size_t)ASN1_STRING_length(s) == strlen(secret) &&
	       memcmp(ASN1_STRING_get0_data(s), secret, strlen(secret)) == 0;
}

/* PKCSReq (19) and RenewalReq (17): RFC 8894 3.3.1. */
static void op_enroll(struct responder *r, struct scep_req *q,
		      struct certrep *rep)
{
	const unsigned char *p = q->content;
	X509_REQ *req = d2i_X509_REQ(NULL, &p, q->content_len);
	EVP_PKEY *pub = req ? X509_REQ_get0_pubkey(req) : NULL;
	struct txn t;

	if (!pub || X509_REQ_verify(req, pub) != 1) {
		ERR_clear_error();
		rep_fail(rep, SCEP_BADREQUEST, "CSR unreadable or badly signed");
		goto out;
	}
	if (r->challenge && q->type == SCEP_PKCSREQ &&
	    !challenge_ok(req, r->challenge)) {
		rep_fail(rep, SCEP_BADREQUEST, "wrong or missing challenge");
		goto out;
	}
	if (r->pending <= 0) {
		rep_issue(r, req, rep);
		goto out;
	}
	/* A resent request on a pending transaction counts like a poll. */
	txn_load(r, q->tid, &t);
	if (t.state != TXN_PENDING) {
		txn_clear(&t);
		t.state = TXN_PENDING;
	}
	free(t.csr);
	t.csr = malloc((size_t)q->content_len);
	if (!t.csr) {
		rep_fail(rep, SCEP_BADREQUEST, "out of memory");
		goto out;
	}
	memcpy(t.csr, q->content, q->content_len);
	t.csr_len = q->content_len;
	t.count++;
	txn_advance(r, q->tid, &t, rep);
	txn_clear(&t);
out:
	X509_REQ_free(req);
}

/* CertPoll (20): IssuerAndSubject, looked up by transactionID (3.3.3). */
static void op_certpoll(struct responder *r, struct scep_req *q,
			struct certrep *rep)
{
	const unsigned char *p = q->content;
	long len;
	int tag, cls;
	struct txn t;

	if (ASN1_get_object(&p, &len, &tag, &cls, q->content_len) & 0x80 ||
	    tag != V_ASN1_SEQUENCE) {
		ERR_clear_error();
		rep_fail(rep, SCEP_BADREQUEST, "content is not IssuerAndSubject");
		return;
	}
	txn_load(r, q->tid, &t);
	if (t.state == TXN_NONE) {
		rep_fail(rep, SCEP_BADCERTID, "unknown transactionID");
	} else if (t.state == TXN_ISSUED) {
		rep->cert = load_issued(r, t.serial);
		if (!rep->cert) {
			rep_fail(rep, SCEP_BADCERTID, "issued cert missing");
		} else {
			rep->status = SCEP_SUCCESS;
			snprintf(rep->note, sizeof(rep->note),
				 "serial=%s (again)", t.serial);
		}
	} else {
		t.count++;
		txn_advance(r, q->tid, &t, rep);
	}
	txn_clear(&t);
}

/* GetCert (21) and GetCRL (22): IssuerAndSerialNumber (3.3.4, 3.3.5). */
static void op_getcert_crl(struct responder *r, struct scep_req *q,
			   struct certrep *rep)
{
	const unsigned char *p = q->content;
	PKCS7_ISSUER_AND_SERIAL *ias;
	char *hex = NULL;

	ias = d2i_PKCS7_ISSUER_AND_SERIAL(NULL, &p, q->content_len);
	if (!ias) {
		ERR_clear_error();
		rep_fail(rep, SCEP_BADREQUEST,
			 "content is not IssuerAndSerialNumber");
		return;
	}
	if (q->type == SCEP_GETCRL) {
		rep->crl = make_crl(r);
		if (rep->crl) {
			rep->status = SCEP_SUCCESS;
			snprintf(rep->note, sizeof(rep->note), "CRL");
		} else {
			rep_fail(rep, SCEP_BADREQUEST, "CRL signing failed");
		}
		goto out;
	}
	hex = serial_hex(ias->serial);
	if (X509_NAME_cmp(ias->issuer, X509_get_subject_name(r->ca_cert)) == 0
	    && hex)
		rep->cert = load_issued(r, hex);
	if (rep->cert) {
		rep->status = SCEP_SUCCESS;
		snprintf(rep->note, sizeof(rep->note), "serial=%s", hex);
	} else {
		rep_fail(rep, SCEP_BADCERTID, "no such certificate");
	}
out:
	OPENSSL_free(hex);
	PKCS7_ISSUER_AND_SERIAL_free(ias);
}

static const char *type_name(int type)
{
	switch (type) {
	case SCEP_RENEWALREQ: return "RenewalReq";
	case SCEP_PKCSREQ: return "PKCSReq";
	case SCEP_CERTPOLL: return "CertPoll";
	case SCEP_GETCERT: return "GetCert";
	case SCEP_GETCRL: return "GetCRL";
	default: return "unknown";
	}
}

static const char *status_name(int status)
{
	return status == SCEP_SUCCESS ? "SUCCESS" :
	       status == SCEP_PENDING ? "PENDING" : "FAILURE";
}

/* ---- HTTP ---- */

static void reply(struct evhttp_request *req, int code, const char *reason,
		  const char *ctype, const void *body, size_t len)
{
	struct evbuffer *buf = evbuffer_new();

	evhttp_add_header(evhttp_request_get_output_headers(req),
			  "Content-Type", ctype);
	if (buf)
		evbuffer_add(buf, body, len);
	evhttp_send_reply(req, code, reason, buf);
	evbuffer_free(buf);
}

static void reply_text(struct evhttp_request *req, int code,
		       const char *reason, const char *msg)
{
	reply(req, code, reason, "text/plain", msg, strlen(msg));
}

/*
 * Decode the base64 of a GET PKIOperation "message" (already percent-
 * decoded). Tolerates newlines, missing padding, a '+' turned into ' '
 * and the URL-safe alphabet. Returns a malloc'ed buffer or NULL.
 */
static unsigned char *b64_decode_loose(const char *in, size_t *outlen)
{
	size_t n = strlen(in), j = 0, pad = 0;
	char *s = malloc(n + 4);
	unsigned char *out = NULL;
	int len;

	if (!s)
		return NULL;
	for (; *in; in++) {
		char c = *in;

		if (c == '\r' || c == '\n' || c == '\t' || c == '=')
			continue;
		s[j++] = c == ' ' || c == '-' ? '+' : c == '_' ? '/' : c;
	}
	if (j % 4 == 1)
		goto out;
	while (j % 4) {
		s[j++] = '=';
		pad++;
	}
	out = malloc(j / 4 * 3 + 1);
	len = out ? EVP_DecodeBlock(out, (unsigned char *)s, (int)j) : -1;
	if (len < 0 || (size_t)len < pad) {
		free(out);
		out = NULL;
		goto out;
	}
	*outlen = (size_t)len - pad;
out:
	free(s);
	return out;
}

static void do_pkioperation(struct responder *r, struct evhttp_request *req,
			    const unsigned char *der, size_t len,
			    const char *method)
{
	struct scep_req q;
	struct certrep rep;
	unsigned char *out = NULL;
	char err[200] = "";
	int fail, outlen;

	memset(&q, 0, sizeof(q));
	memset(&rep, 0, sizeof(rep));
	if (req_parse_outer(&q, der, len, err, sizeof(err)) != 0) {
		ERR_clear_error();
		fprintf(stderr, "scep-responder: PKIOperation %s -> 400 %s\n",
			method, err);
		reply_text(req, 400, "Bad Request", err);
		goto out;
	}
	fail = req_open_envelope(r, &q, err, sizeof(err));
	if (fail)
		rep_fail(&rep, fail, err);
	else if (q.type == SCEP_PKCSREQ || q.type == SCEP_RENEWALREQ)
		op_enroll(r, &q, &rep);
	else if (q.type == SCEP_CERTPOLL)
		op_certpoll(r, &q, &rep);
	else if (q.type == SCEP_GETCERT || q.type == SCEP_GETCRL)
		op_getcert_crl(r, &q, &rep);
	else
		rep_fail(&rep, SCEP_BADREQUEST, "unsupported messageType");

	outlen = certrep_der(r, &q, &rep, &out);
	fprintf(stderr, "scep-responder: PKIOperation %s messageType=%d(%s) "
		"transactionID=%s -> %s %s\n", method, q.type,
		type_name(q.type), q.tid,
		outlen > 0 ? status_name(rep.status) : "500", rep.note);
	if (outlen <= 0)
		reply_text(req, 500, "Internal Server Error",
			   "cannot build the CertRep");
	else
		reply(req, 200, "OK", "application/x-pki-message", out,
		      (size_t)outlen);
out:
	OPENSSL_free(out);
	X509_free(rep.cert);
	X509_CRL_free(rep.crl);
	scep_req_free(&q);
}

static void do_getcacert(struct responder *r, struct evhttp_request *req)
{
	unsigned char *der = NULL;
	int len;

	if (r->use_ra)
		len = degenerate_der(r->ra_cert, r->ca_cert, NULL, &der);
	else
		len = i2d_X509(r->ca_cert, &der);
	if (len <= 0) {
		ssl_err("encoding GetCACert");
		reply_text(req, 500, "Internal Server Error", "encoding failed");
		return;
	}
	reply(req, 200, "OK", r->use_ra ? "application/x-x509-ca-ra-cert" :
	      "application/x-x509-ca-cert", der, (size_t)len);
	fprintf(stderr, "scep-responder: GetCACert -> 200 %s\n",
		r->use_ra ? "RA+CA PKCS#7" : "CA DER");
	OPENSSL_free(der);
}

static void do_pki_get(struct responder *r, struct evhttp_request *req,
		       const char *msg)
{
	unsigned char *der;
	size_t len = 0;

	der = msg ? b64_decode_loose(msg, &len) : NULL;
	if (!der) {
		fprintf(stderr, "scep-responder: PKIOperation GET -> 400 "
			"bad or missing message parameter\n");
		reply_text(req, 400, "Bad Request",
			   "message parameter missing or not base64");
		return;
	}
	do_pkioperation(r, req, der, len, "GET");
	free(der);
}

static void do_pki_post(struct responder *r, struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	unsigned char *der = evbuffer_pullup(in, -1);

	if (r->no_post) {
		fprintf(stderr, "scep-responder: PKIOperation POST -> 405 "
			"(--no-post)\n");
		reply_text(req, 405, "Method Not Allowed",
			   "POST PKIOperation is disabled (--no-post)");
		return;
	}
	if (!der || len == 0) {
		reply_text(req, 400, "Bad Request", "empty POST body");
		return;
	}
	do_pkioperation(r, req, der, len, "POST");
}

static void http_cb(struct evhttp_request *req, void *arg)
{
	struct responder *r = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	int is_post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;
	struct evkeyvalq params;
	const char *op;

	TAILQ_INIT(&params);
	if (query && evhttp_parse_query_str(query, &params) != 0) {
		reply_text(req, 400, "Bad Request", "malformed query string");
		goto out;
	}
	op = evhttp_find_header(&params, "operation");
	if (!op && is_post)
		op = "PKIOperation";
	if (!op) {
		reply_text(req, 400, "Bad Request", "missing operation");
	} else if (strcmp(op, "GetCACaps") == 0) {
		reply_text(req, 200, "OK", r->caps);
		fprintf(stderr, "scep-responder: GetCACaps -> 200\n");
	} else if (strcmp(op, "GetCACert") == 0) {
		do_getcacert(r, req);
	} else if (strcmp(op, "PKIOperation") == 0) {
		if (is_post)
			do_pki_post(r, req);
		else
			do_pki_get(r, req,
				   evhttp_find_header(&params, "message"));
	} else {
		fprintf(stderr, "scep-responder: %s -> 404\n", op);
		reply_text(req, 404, "Not Found", "operation not supported");
	}
out:
	evhttp_clear_headers(&params);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	fprintf(stderr, "scep-responder: signal %d, exiting\n", (int)sig);
	event_base_loopbreak(arg);
}

/* ---- setup ---- */

/* --caps text: turn the two characters "\n" into newlines. */
static char *caps_unescape(const char *in)
{
	char *out = malloc(strlen(in) + 2), *o = out;

	if (!out)
		return NULL;
	for (; *in; in++) {
		if (in[0] == '\\' && in[1] == 'n') {
			*o++ = '\n';
			in++;
		} else {
			*o++ = *in;
		}
	}
	*o = '\0';
	return out;
}

static void usage(void)
{
	fprintf(stderr, "usage: scep-responder --dir DIR --port PORT [--ra] "
		"[--pending N] [--challenge SECRET]\n"
		"                      [--caps TEXT] [--no-post] "
		"[--validity-days D]\n");
	exit(2);
}

static void parse_args(struct responder *r, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "port", required_argument, NULL, 'p' },
		{ "ra", no_argument, NULL, 'r' },
		{ "pending", required_argument, NULL, 'n' },
		{ "challenge", required_argument, NULL, 'c' },
		{ "caps", required_argument, NULL, 'C' },
		{ "no-post", no_argument, NULL, 'P' },
		{ "validity-days", required_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	const char *caps = NULL;
	int c;

	r->validity_days = 30;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd': r->dir = optarg; break;
		case 'p': r->port = atoi(optarg); break;
		case 'r': r->use_ra = 1; break;
		case 'n': r->pending = atoi(optarg); break;
		case 'c': r->challenge = optarg; break;
		case 'C': caps = optarg; break;
		case 'P': r->no_post = 1; break;
		case 'v': r->validity_days = atoi(optarg); break;
		default: usage();
		}
	}
	if (!r->dir || r->port <= 0 || r->port > 65535 || optind != argc ||
	    r->pending < 0 || r->validity_days <= 0)
		usage();
	if (!caps)
		caps = r->no_post ? DEFAULT_CAPS_NOPOST : DEFAULT_CAPS;
	r->caps = caps_unescape(caps);
	if (!r->caps)
		exit(1);
}

static int state_init(struct responder *r)
{
	char path[4096];

	if (mkdir_p(r->dir))
		return -1;
	snprintf(path, sizeof(path), "%s/issued", r->dir);
	if (mkdir_p(path))
		return -1;
	snprintf(path, sizeof(path), "%s/pending", r->dir);
	if (mkdir_p(path))
		return -1;
	if (keypair_init(r, "ca", "fleetgate test SCEP CA", 1, &r->ca_key,
			 &r->ca_cert))
		return -1;
	if (r->use_ra && keypair_init(r, "ra", "fleetgate test SCEP RA", 0,
				      &r->ra_key, &r->ra_cert))
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct responder r;
	struct event_base *base = NULL;
	struct evhttp *http = NULL;
	struct event *sigterm = NULL, *sigint = NULL;
	OSSL_PROVIDER *prov_default = NULL, *prov_legacy = NULL;
	int rc = 1;

	memset(&r, 0, sizeof(r));
	parse_args(&r, argc, argv);
	signal(SIGPIPE, SIG_IGN);
	/*
	 * Clients such as micromdm scepclient 2.1 still encrypt with single
	 * DES-CBC, which OpenSSL 3 keeps in the legacy provider.
	 */
	prov_default = OSSL_PROVIDER_load(NULL, "default");
	prov_legacy = OSSL_PROVIDER_load(NULL, "legacy");
	if (!prov_default || !prov_legacy) {
		ssl_err("loading the OpenSSL default+legacy providers");
		goto out;
	}
	if (scep_nids_init() || state_init(&r))
		goto out;
	base = event_base_new();
	http = base ? evhttp_new(base) : NULL;
	if (!http)
		goto out;
	evhttp_set_gencb(http, http_cb, &r);
	if (evhttp_bind_socket(http, "127.0.0.1", (ev_uint16_t)r.port) != 0) {
		fprintf(stderr, "scep-responder: cannot listen on "
			"127.0.0.1:%d: %s\n", r.port, strerror(errno));
		goto out;
	}
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	if (!sigterm || !sigint || event_add(sigterm, NULL) ||
	    event_add(sigint, NULL))
		goto out;
	printf("ready http://127.0.0.1:%d/scep%s%s\n", r.port,
	       r.use_ra ? " ra" : "", r.pending ? " pending" : "");
	fflush(stdout);
	event_base_dispatch(base);
	rc = 0;
out:
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	if (http)
		evhttp_free(http);
	if (base)
		event_base_free(base);
	EVP_PKEY_free(r.ca_key);
	X509_free(r.ca_cert);
	EVP_PKEY_free(r.ra_key);
	X509_free(r.ra_cert);
	free(r.caps);
	if (prov_legacy)
		OSSL_PROVIDER_unload(prov_legacy);
	if (prov_default)
		OSSL_PROVIDER_unload(prov_default);
	return rc;
}
