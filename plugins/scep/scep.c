/*
 * scep.c: a backend plugin that gets certificates from a SCEP CA (RFC 8894).
 *
 * Model: the gateway is the SCEP requester on the device's behalf, as an RA
 * or proxy is. It signs each pkiMessage with its own signer key and
 * certificate (a self-signed RSA certificate it makes in
 * <state_dir>/scep/<name>/ unless signer_cert/signer_key name an RA
 * certificate the CA trusts), carries the device's CSR unchanged inside the
 * pkcsPKIEnvelope (the device's key never leaves the device), and decrypts
 * the CertRep, which the CA encrypts to the signer. Because a SCEP CA takes
 * the subject, the names and the challengePassword from the CSR, csr_needs
 * tells the host so: the host has the device rebuild its CSR with exactly
 * the names the policy decided and the challenge (static from the config,
 * or per device from the policy) before anything is admitted.
 *
 * Settings (backends.<name> in the gateway config):
 *   url             http(s)://host[:port]/path of the SCEP service (required)
 *   ca_fingerprint  SHA-256 of the CA certificate, hex, colons allowed
 *                   (required: GetCACert comes over an unauthenticated channel)
 *   challenge       static challengePassword; a policy's allow{challenge=}
 *                   overrides it per device
 *   ca_identifier   the message= of GetCACert, for servers hosting several CAs
 *   signer_cert, signer_key   an RA certificate and RSA key (PEM) instead of
 *                   the self-signed signer
 *   renewal         auto (RenewalReq when the CA offers Renewal and the
 *                   signer is a configured RA certificate), pkcsreq, renewalreq
 *   cipher          auto (AES-128-CBC when AES is offered, RFC 8894 3.5.2;
 *                   else 3DES with a warning), aes256 (AES-256-CBC when AES is
 *                   offered)
 *   tls_ca_file     trust anchors for an https url (default: the system's)
 *   timeout         seconds for one HTTP exchange (default 30)
 *   poll_interval   seconds between CertPoll messages for a PENDING request
 *                   (default 60)
 *   cache_ttl       seconds GetCACaps/GetCACert answers are reused (3600)
 *
 * Durable job state: "scep.txid" (the transactionID, written before the
 * first message leaves) and "scep.state" ("pending" once the CA said
 * PENDING). A job resumed after a restart polls with CertPoll when pending,
 * else sends its PKCSReq again with the same transactionID, which RFC 8894
 * section 3.3.1 lets a CA recognise as a repeat.
 *
 * Threads: issue, poll and cacerts may run concurrently; the cached CA view
 * is behind a mutex and handed out with references. The signer key is
 * read-only after open.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "fleetgate/plugin.h"
#include "fgp.h"

#define MAX_BODY FGP_MAX_BODY      /* largest HTTP answer read */
#define NONCE_LEN 16
#define RETRY_SECONDS 30          /* suggested retry after a transient failure */

/* One log line through the host, from a plugin instance (fgp.h). */
#define slog(obj, lvl, rid, ...) fgp_log((obj)->host, (lvl), (rid), __VA_ARGS__)

/* RFC 8894 section 3.2.1.2 message types and 3.2.1.3 pkiStatus values. */
enum { MT_CERTREP = 3, MT_RENEWALREQ = 17, MT_PKCSREQ = 19, MT_CERTPOLL = 20, MT_GETCERT = 21,
       MT_GETCRL = 22 };
enum { PKI_SUCCESS = 0, PKI_FAILURE = 2, PKI_PENDING = 3 };

/* GetCACaps keywords we act on (RFC 8894 section 3.5.2). */
enum {
	CAP_POST = 1u << 0, CAP_AES = 1u << 1, CAP_SHA256 = 1u << 2, CAP_SHA1 = 1u << 3,
	CAP_DES3 = 1u << 4, CAP_RENEWAL = 1u << 5, CAP_STANDARD = 1u << 6, CAP_SHA512 = 1u << 7,
};

/* SCEP attribute NIDs, registered once. */
static int nid_msgtype, nid_status, nid_failinfo, nid_snonce, nid_rnonce, nid_txid;
static pthread_once_t nids_once = PTHREAD_ONCE_INIT;
static int nids_ok;

static void nids_init(void)
{
	static const struct { int *nid; const char *oid, *sn; } t[] = {
		{ &nid_msgtype, "2.16.840.1.113733.1.9.2", "scepMessageType" },
		{ &nid_status, "2.16.840.1.113733.1.9.3", "scepPkiStatus" },
		{ &nid_failinfo, "2.16.840.1.113733.1.9.4", "scepFailInfo" },
		{ &nid_snonce, "2.16.840.1.113733.1.9.5", "scepSenderNonce" },
		{ &nid_rnonce, "2.16.840.1.113733.1.9.6", "scepRecipientNonce" },
		{ &nid_txid, "2.16.840.1.113733.1.9.7", "scepTransactionID" },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		int nid = OBJ_txt2nid(t[i].oid);
		if (nid == NID_undef)
			nid = OBJ_create(t[i].oid, t[i].sn, t[i].sn);
		if (nid == NID_undef)
			return;
		*t[i].nid = nid;
	}
	nids_ok = 1;
}

/* A library context with the legacy provider, only for reading CertReps
 * that a CA encrypted with single DES; made once, NULL when unavailable. */
static OSSL_LIB_CTX *legacy_lc;
static pthread_once_t legacy_once = PTHREAD_ONCE_INIT;

static void legacy_init(void)
{
	OSSL_LIB_CTX *lc = OSSL_LIB_CTX_new();
	if (lc == NULL)
		return;
	if (OSSL_PROVIDER_load(lc, "default") == NULL || OSSL_PROVIDER_load(lc, "legacy") == NULL) {
		ERR_clear_error();
		OSSL_LIB_CTX_free(lc);
		return;
	}
	legacy_lc = lc;
}

static OSSL_LIB_CTX *legacy_ctx(void)
{
	pthread_once(&legacy_once, legacy_init);
	return legacy_lc;
}

/* What GetCACaps and GetCACert said, shared by reference. */
struct ca_view {
	int refs;                     /* under scep.mu */
	int64_t fetched;
	unsigned caps;
	X509 *ca;                     /* the pinned CA certificate */
	X509 *enc;                    /* recipient of pkcsPKIEnvelope: RA or CA */
	X509 *ver;                    /* signer of CertRep: RA or CA */
	const EVP_CIPHER *cipher;
	const EVP_MD *md;
};

enum renewal_mode { REN_AUTO, REN_PKCSREQ, REN_RENEWALREQ };

struct scep {
	const struct fg_host *host;
	char name[64];
	char url[1024];
	char challenge[256];
	char ca_ident[128];
	char tls_ca_file[PATH_MAX];
	unsigned char pin[32];
	long timeout;
	uint32_t poll_interval;
	int64_t cache_ttl;
	enum renewal_mode renewal;
	int aes256;
	int signer_is_ra;             /* configured, not self-signed */
	int warned_des;               /* said once that the CA answers in DES */
	X509 *signer;
	EVP_PKEY *signer_key;
	pthread_mutex_t mu;
	struct ca_view *view;         /* cached, may be NULL */
};

/* ---- the CA view ---- */

static void view_put(struct scep *s, struct ca_view *v)
{
	if (v == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	int last = --v->refs == 0;
	pthread_mutex_unlock(&s->mu);
	if (!last)
		return;
	X509_free(v->ca);
	X509_free(v->enc);
	X509_free(v->ver);
	free(v);
}

/* ---- HTTP (libcurl) ---- */

/* GET (post == NULL) or POST url; 0 with the body and content type on HTTP
 * 200, -1 with err otherwise (unreachable, HTTP error, too large). */
static int http(struct scep *s, const char *url, const unsigned char *post, size_t postlen,
		struct fgp_body *out, char *ctype, size_t ctlen, char *err, size_t errlen)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdr = NULL;
	char cerr[CURL_ERROR_SIZE] = "";
	long code = 0;
	int rc = -1;

	memset(out, 0, sizeof *out);
	if (ctype)
		ctype[0] = 0;
	if (c == NULL) {
		fgp_seterr(err, errlen, "cannot start an HTTP request (out of memory)");
		return -1;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, s->timeout);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, s->timeout < 10 ? s->timeout : 10L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fgp_body_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "fleetgate-scep/1");
	if (s->tls_ca_file[0])
		curl_easy_setopt(c, CURLOPT_CAINFO, s->tls_ca_file);
	if (post != NULL) {
		hdr = curl_slist_append(hdr, "Content-Type: application/x-pki-message");
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)post);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)postlen);
	}
	CURLcode cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		if (out->too_big)
			fgp_seterr(err, errlen, "the SCEP server at %s sent more than %d bytes", s->url, MAX_BODY);
		else
			fgp_seterr(err, errlen, "cannot reach the SCEP server at %s: %s", s->url,
			       cerr[0] ? cerr : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200) {
		char snippet[160] = "";
		if (out->p != NULL) {
			size_t i;
			for (i = 0; i < out->n && i < sizeof snippet - 1 && isprint(out->p[i]); i++)
				snippet[i] = (char)out->p[i];
			snippet[i] = 0;
		}
		fgp_seterr(err, errlen, "the SCEP server at %s answered HTTP %ld%s%s", s->url, code,
		       snippet[0] ? ": " : "", snippet);
		goto out;
	}
	if (ctype) {
		char *ct = NULL;
		curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
		snprintf(ctype, ctlen, "%s", ct ? ct : "");
	}
	rc = 0;
out:
	if (rc != 0) {
		free(out->p);
		memset(out, 0, sizeof *out);
	}
	curl_slist_free_all(hdr);
	curl_easy_cleanup(c);
	return rc;
}

/* url?operation=OP[&message=MSG] with MSG percent-encoded. */
static int op_url(const struct scep *s, const char *op, const char *msg, char **out)
{
	char *esc = NULL;
	if (msg != NULL) {
		esc = curl_easy_escape(NULL, msg, 0);
		if (esc == NULL)
			return -1;
	}
	int n = asprintf(out, "%s%soperation=%s%s%s", s->url, strchr(s->url, '?') ? "&" : "?", op,
			 esc ? "&message=" : "", esc ? esc : "");
	curl_free(esc);
	return n < 0 ? -1 : 0;
}

/* ---- GetCACaps, GetCACert ---- */

static unsigned parse_caps(const char *text)
{
	static const struct { const char *kw; unsigned bit; } t[] = {
		{ "POSTPKIOperation", CAP_POST }, { "AES", CAP_AES }, { "SHA-256", CAP_SHA256 },
		{ "SHA-1", CAP_SHA1 }, { "DES3", CAP_DES3 }, { "Renewal", CAP_RENEWAL },
		{ "SCEPStandard", CAP_STANDARD }, { "SHA-512", CAP_SHA512 },
	};
	unsigned caps = 0;
	const char *p = text;
	while (*p) {
		size_t n = strcspn(p, "\r\n");
		while (n > 0 && isspace((unsigned char)p[n - 1]))
			n--;
		for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
			if (strlen(t[i].kw) == n && strncasecmp(p, t[i].kw, n) == 0)
				caps |= t[i].bit;
		p += strcspn(p, "\r\n");
		p += strspn(p, "\r\n");
	}
	if (caps & CAP_STANDARD)       /* RFC 8894 3.5.2: implies AES, POST and SHA-256 */
		caps |= CAP_AES | CAP_POST | CAP_SHA256;
	return caps;
}

static int cert_sha256(const X509 *x, unsigned char out[32])
{
	unsigned int n = 0;
	return X509_digest(x, EVP_sha256(), out, &n) == 1 && n == 32 ? 0 : -1;
}

static int has_ku(X509 *x, uint32_t bit)
{
	uint32_t ku = X509_get_key_usage(x);
	return ku == UINT32_MAX || (ku & bit) != 0;    /* no extension: any use */
}

/* Choose CA, recipient and CertRep signer from GetCACert's certificates
 * (RFC 8894 section 3.5.1): the CA is the pinned one; an RA is a non-CA
 * certificate the CA issued, used for encryption when it allows
 * keyEncipherment and for signatures when it allows digitalSignature. */
static int pick_certs(struct scep *s, STACK_OF(X509) *certs, struct ca_view *v, char *err,
		      size_t errlen)
{
	for (int i = 0; i < sk_X509_num(certs); i++) {
		unsigned char d[32];
		X509 *x = sk_X509_value(certs, i);
		if (cert_sha256(x, d) == 0 && memcmp(d, s->pin, 32) == 0) {
			v->ca = x;
			X509_up_ref(x);
			break;
		}
	}
	if (v->ca == NULL) {
		fgp_seterr(err, errlen,
		       "none of the %d certificates the SCEP server at %s sent matches ca_fingerprint; if the CA changed, check the new certificate and update ca_fingerprint",
		       sk_X509_num(certs), s->url);
		return -1;
	}
	EVP_PKEY *capub = X509_get0_pubkey(v->ca);
	for (int i = 0; i < sk_X509_num(certs); i++) {
		X509 *x = sk_X509_value(certs, i);
		if (x == v->ca || X509_check_ca(x) != 0)
			continue;
		if (X509_check_issued(v->ca, x) != X509_V_OK || capub == NULL || X509_verify(x, capub) != 1) {
			ERR_clear_error();
			slog(s, FG_LEVEL_WARN, NULL, "backend %s: ignoring a certificate from GetCACert that the CA did not issue",
			     s->name);
			continue;
		}
		if (v->enc == NULL && has_ku(x, KU_KEY_ENCIPHERMENT)) {
			v->enc = x;
			X509_up_ref(x);
		}
		if (v->ver == NULL && has_ku(x, KU_DIGITAL_SIGNATURE)) {
			v->ver = x;
			X509_up_ref(x);
		}
	}
	if (v->enc == NULL) {
		v->enc = v->ca;
		X509_up_ref(v->ca);
	}
	if (v->ver == NULL) {
		v->ver = v->ca;
		X509_up_ref(v->ca);
	}
	if (EVP_PKEY_get_base_id(X509_get0_pubkey(v->enc)) != EVP_PKEY_RSA) {
		fgp_seterr(err, errlen, "the SCEP %s certificate has no RSA key, so nothing can be encrypted to it; SCEP needs an RSA CA or RA",
		       v->enc == v->ca ? "CA" : "RA");
		return -1;
	}
	return 0;
}

static STACK_OF(X509) *certs_from_cacert(const unsigned char *p, size_t n, const char *ctype)
{
	STACK_OF(X509) *out = sk_X509_new_null();
	const unsigned char *q = p;
	X509 *x = NULL;
	PKCS7 *p7 = NULL;

	if (out == NULL)
		return NULL;
	(void)ctype;    /* some servers mislabel; the DER tells */
	if ((x = d2i_X509(NULL, &q, (long)n)) != NULL && q == p + n) {
		sk_X509_push(out, x);
		return out;
	}
	X509_free(x);
	ERR_clear_error();
	q = p;
	p7 = d2i_PKCS7(NULL, &q, (long)n);
	if (p7 != NULL && PKCS7_type_is_signed(p7) && p7->d.sign->cert != NULL) {
		for (int i = 0; i < sk_X509_num(p7->d.sign->cert); i++) {
			X509 *c = sk_X509_value(p7->d.sign->cert, i);
			X509_up_ref(c);
			sk_X509_push(out, c);
		}
	}
	PKCS7_free(p7);
	ERR_clear_error();
	if (sk_X509_num(out) == 0) {
		sk_X509_free(out);
		return NULL;
	}
	return out;
}

static unsigned char *to_der(X509 *x, size_t *len);

static struct ca_view *view_fetch(struct scep *s, char *err, size_t errlen)
{
	struct ca_view *v = calloc(1, sizeof *v);
	struct fgp_body b = { 0 };
	char ctype[128], *url = NULL;
	STACK_OF(X509) *certs = NULL;

	if (v == NULL) {
		fgp_seterr(err, errlen, "out of memory");
		return NULL;
	}
	v->refs = 1;
	if (op_url(s, "GetCACaps", NULL, &url) != 0)
		goto oom;
	if (http(s, url, NULL, 0, &b, ctype, sizeof ctype, err, errlen) == 0) {
		v->caps = parse_caps((const char *)b.p);
	} else if (strstr(err, "answered HTTP") != NULL) {
		slog(s, FG_LEVEL_WARN, NULL, "backend %s: GetCACaps failed (%s); assuming the oldest SCEP (GET, 3DES, SHA-1)",
		     s->name, err);
	} else {
		goto fail;
	}
	free(b.p);
	free(url);
	b.p = NULL;
	if (op_url(s, "GetCACert", s->ca_ident[0] ? s->ca_ident : NULL, &url) != 0)
		goto oom;
	if (http(s, url, NULL, 0, &b, ctype, sizeof ctype, err, errlen) != 0)
		goto fail;
	certs = certs_from_cacert(b.p, b.n, ctype);
	if (certs == NULL) {
		fgp_seterr(err, errlen, "the SCEP server at %s answered GetCACert with neither a certificate nor a PKCS#7 certificate bundle (Content-Type %s)",
		       s->url, ctype[0] ? ctype : "none");
		goto fail;
	}
	if (pick_certs(s, certs, v, err, errlen) != 0)
		goto fail;

	if (v->caps & CAP_AES) {
		v->cipher = s->aes256 ? EVP_aes_256_cbc() : EVP_aes_128_cbc();
	} else {
		v->cipher = EVP_des_ede3_cbc();
		slog(s, FG_LEVEL_WARN, NULL, "backend %s: the SCEP CA does not offer AES; using 3DES",
		     s->name);
	}
	if (v->caps & CAP_SHA512) {
		v->md = EVP_sha512();
	} else if (v->caps & CAP_SHA256) {
		v->md = EVP_sha256();
	} else {
		v->md = EVP_sha1();
		slog(s, FG_LEVEL_WARN, NULL, "backend %s: the SCEP CA does not offer SHA-256; using SHA-1",
		     s->name);
	}
	v->fetched = s->host->now(s->host->ctx);
	size_t dl = 0;
	unsigned char *dd = to_der(v->ca, &dl);
	if (dd == NULL || s->host->state_put(s->host->ctx, "ca_cert", dd, dl) != 0)
		slog(s, FG_LEVEL_WARN, NULL, "backend %s: cannot keep the CA certificate in the store", s->name);
	free(dd);
	sk_X509_pop_free(certs, X509_free);
	free(b.p);
	free(url);
	return v;
oom:
	fgp_seterr(err, errlen, "out of memory");
fail:
	sk_X509_pop_free(certs, X509_free);
	free(b.p);
	free(url);
	v->refs = 1;
	X509_free(v->ca);
	X509_free(v->enc);
	X509_free(v->ver);
	free(v);
	return NULL;
}

/* The CA view, fetched when missing or older than cache_ttl (or when
 * refresh is set); a reference the caller drops with view_put. */
static struct ca_view *view_get(struct scep *s, int refresh, char *err, size_t errlen)
{
	int64_t now = s->host->now(s->host->ctx);
	struct ca_view *v = NULL;

	pthread_mutex_lock(&s->mu);
	if (!refresh && s->view != NULL && now - s->view->fetched < s->cache_ttl) {
		v = s->view;
		v->refs++;
	}
	pthread_mutex_unlock(&s->mu);
	if (v != NULL)
		return v;
	v = view_fetch(s, err, errlen);
	if (v == NULL)
		return NULL;
	pthread_mutex_lock(&s->mu);
	struct ca_view *old = s->view;
	s->view = v;
	v->refs++;              /* the cache's reference */
	pthread_mutex_unlock(&s->mu);
	view_put(s, old);
	return v;
}

/* ---- pkiMessage ---- */

static int add_printable(PKCS7_SIGNER_INFO *si, int nid, const char *v)
{
	ASN1_PRINTABLESTRING *ps = ASN1_PRINTABLESTRING_new();
	if (ps == NULL || ASN1_STRING_set(ps, v, -1) != 1 ||
	    PKCS7_add_signed_attribute(si, nid, V_ASN1_PRINTABLESTRING, ps) != 1) {
		ASN1_STRING_free(ps);
		return -1;
	}
	return 0;
}

static int add_octets(PKCS7_SIGNER_INFO *si, int nid, const unsigned char *v, size_t n)
{
	ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
	if (os == NULL || ASN1_OCTET_STRING_set(os, v, (int)n) != 1 ||
	    PKCS7_add_signed_attribute(si, nid, V_ASN1_OCTET_STRING, os) != 1) {
		ASN1_OCTET_STRING_free(os);
		return -1;
	}
	return 0;
}

/* A pkiMessage (RFC 8894 section 3.2): content encrypted to the CA/RA in a
 * pkcsPKIEnvelope, inside SignedData signed by the gateway's signer with
 * the messageType, transactionID and senderNonce attributes. */
static int build_message(struct scep *s, const struct ca_view *v, int type, const char *txid,
			 const unsigned char nonce[NONCE_LEN], const unsigned char *content,
			 size_t clen, unsigned char **out, size_t *outlen, char *err, size_t errlen)
{
	STACK_OF(X509) *rcpt = sk_X509_new_null();
	BIO *in = BIO_new_mem_buf(content, (int)clen), *sb = NULL;
	PKCS7 *env = NULL, *p7 = NULL;
	unsigned char *envder = NULL;
	int envlen, n, rc = -1;
	char mt[8];

	*out = NULL;
	if (rcpt == NULL || in == NULL || sk_X509_push(rcpt, v->enc) <= 0) {
		fgp_seterr(err, errlen, "out of memory");
		goto out;
	}
	env = PKCS7_encrypt(rcpt, in, v->cipher, PKCS7_BINARY);
	if (env == NULL || (envlen = i2d_PKCS7(env, &envder)) <= 0) {
		fgp_ssl_err(err, errlen, "cannot build the pkcsPKIEnvelope");
		goto out;
	}
	snprintf(mt, sizeof mt, "%d", type);
	p7 = PKCS7_new();
	PKCS7_SIGNER_INFO *si = NULL;
	if (p7 == NULL || PKCS7_set_type(p7, NID_pkcs7_signed) != 1 ||
	    (si = PKCS7_add_signature(p7, s->signer, s->signer_key, v->md)) == NULL ||
	    PKCS7_add_certificate(p7, s->signer) != 1 ||
	    PKCS7_add_signed_attribute(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
				       OBJ_nid2obj(NID_pkcs7_data)) != 1 ||
	    add_printable(si, nid_msgtype, mt) != 0 || add_printable(si, nid_txid, txid) != 0 ||
	    add_octets(si, nid_snonce, nonce, NONCE_LEN) != 0 ||
	    PKCS7_content_new(p7, NID_pkcs7_data) != 1 || (sb = PKCS7_dataInit(p7, NULL)) == NULL ||
	    BIO_write(sb, envder, envlen) != envlen || BIO_flush(sb) != 1 ||
	    PKCS7_dataFinal(p7, sb) != 1) {
		fgp_ssl_err(err, errlen, "cannot sign the pkiMessage");
		goto out;
	}
	if ((n = i2d_PKCS7(p7, out)) <= 0) {
		fgp_ssl_err(err, errlen, "cannot encode the pkiMessage");
		*out = NULL;
		goto out;
	}
	*outlen = (size_t)n;
	rc = 0;
out:
	BIO_free_all(sb);
	BIO_free(in);
	sk_X509_free(rcpt);
	PKCS7_free(env);
	PKCS7_free(p7);
	OPENSSL_free(envder);
	return rc;
}

/* A CertRep, checked: signed by the CA's signing certificate, for our
 * transaction, answering our nonce. */
struct certrep {
	int status;                   /* PKI_* */
	int fail_info;                /* -1 when absent */
	STACK_OF(X509) *certs;        /* SUCCESS: the degenerate content's certificates */
	STACK_OF(X509_CRL) *crls;
};

static void certrep_clear(struct certrep *r)
{
	sk_X509_pop_free(r->certs, X509_free);
	sk_X509_CRL_pop_free(r->crls, X509_CRL_free);
	memset(r, 0, sizeof *r);
}

static int attr_text(PKCS7_SIGNER_INFO *si, int nid, char *out, size_t outlen)
{
	ASN1_TYPE *t = PKCS7_get_signed_attribute(si, nid);
	if (t == NULL || (t->type != V_ASN1_PRINTABLESTRING && t->type != V_ASN1_UTF8STRING &&
			  t->type != V_ASN1_IA5STRING))
		return -1;
	const ASN1_STRING *as = t->value.asn1_string;
	int n = ASN1_STRING_length(as);
	if (n < 0 || (size_t)n >= outlen)
		return -1;
	memcpy(out, ASN1_STRING_get0_data(as), (size_t)n);
	out[n] = 0;
	return 0;
}

static int parse_certrep(struct scep *s, const struct ca_view *v, const unsigned char *der,
			 size_t len, const char *txid, const unsigned char nonce[NONCE_LEN],
			 struct certrep *rep, char *err, size_t errlen)
{
	const unsigned char *q = der;
	PKCS7 *p7 = d2i_PKCS7(NULL, &q, (long)len), *env = NULL, *inner = NULL;
	STACK_OF(X509) *vs = sk_X509_new_null();
	BIO *data = BIO_new(BIO_s_mem()), *indata = NULL, *plain = BIO_new(BIO_s_mem());
	char buf[128];
	int rc = -1;

	memset(rep, 0, sizeof *rep);
	rep->fail_info = -1;
	if (vs == NULL || data == NULL || plain == NULL || sk_X509_push(vs, v->ver) <= 0) {
		fgp_seterr(err, errlen, "out of memory");
		goto out;
	}
	if (p7 == NULL || !PKCS7_type_is_signed(p7)) {
		fgp_ssl_err(err, errlen, "the SCEP server's answer is not a PKCS#7 SignedData CertRep");
		goto out;
	}
	if (PKCS7_get_detached(p7))
		indata = BIO_new_mem_buf("", 0);
	if (PKCS7_verify(p7, vs, NULL, indata, data, PKCS7_NOVERIFY | PKCS7_NOINTERN) != 1) {
		fgp_ssl_err(err, errlen, "the CertRep is not signed by the SCEP %s certificate from GetCACert",
			v->ver == v->ca ? "CA" : "RA");
		goto out;
	}
	STACK_OF(PKCS7_SIGNER_INFO) *sis = PKCS7_get_signer_info(p7);
	PKCS7_SIGNER_INFO *si = sis ? sk_PKCS7_SIGNER_INFO_value(sis, 0) : NULL;
	if (si == NULL || attr_text(si, nid_msgtype, buf, sizeof buf) != 0 || atoi(buf) != MT_CERTREP) {
		fgp_seterr(err, errlen, "the SCEP server's answer is not a CertRep (messageType %s)",
		       si ? buf : "missing");
		goto out;
	}
	if (attr_text(si, nid_txid, buf, sizeof buf) != 0 || strcmp(buf, txid) != 0) {
		fgp_seterr(err, errlen, "the CertRep is for another transaction (transactionID '%s', sent '%s')",
		       buf, txid);
		goto out;
	}
	ASN1_TYPE *rn = PKCS7_get_signed_attribute(si, nid_rnonce);
	if (rn == NULL || rn->type != V_ASN1_OCTET_STRING ||
	    ASN1_STRING_length(rn->value.octet_string) != NONCE_LEN ||
	    memcmp(ASN1_STRING_get0_data(rn->value.octet_string), nonce, NONCE_LEN) != 0) {
		fgp_seterr(err, errlen, "the CertRep's recipientNonce does not echo the request's senderNonce (a replayed or misrouted answer)");
		goto out;
	}
	if (attr_text(si, nid_status, buf, sizeof buf) != 0) {
		fgp_seterr(err, errlen, "the CertRep carries no pkiStatus");
		goto out;
	}
	rep->status = atoi(buf);
	if (rep->status == PKI_FAILURE) {
		if (attr_text(si, nid_failinfo, buf, sizeof buf) == 0)
			rep->fail_info = atoi(buf);
		rc = 0;
		goto out;
	}
	if (rep->status == PKI_PENDING) {
		rc = 0;
		goto out;
	}
	if (rep->status != PKI_SUCCESS) {
		fgp_seterr(err, errlen, "the CertRep has an unknown pkiStatus %d", rep->status);
		goto out;
	}
	/* SUCCESS: the content is a pkcsPKIEnvelope for our signer holding a
	 * degenerate certificates-only SignedData */
	char *dp;
	long dn = BIO_get_mem_data(data, &dp);
	q = (const unsigned char *)dp;
	env = dn > 0 ? d2i_PKCS7(NULL, &q, dn) : NULL;
	if (env != NULL && PKCS7_type_is_enveloped(env) && env->d.enveloped->enc_data->algorithm &&
	    OBJ_obj2nid(env->d.enveloped->enc_data->algorithm->algorithm) == NID_des_cbc) {
		/* Some CAs (micromdm's scepserver among them) encrypt the
		 * CertRep with single DES whatever the request used. What it
		 * protects is a certificate, which is public, so it is read in
		 * a library context of its own that has OpenSSL's legacy
		 * provider; the rest of the process never gets DES. */
		OSSL_LIB_CTX *lc = legacy_ctx();
		PKCS7_free(env);
		env = lc ? PKCS7_new_ex(lc, NULL) : NULL;
		q = (const unsigned char *)dp;
		if (env != NULL && d2i_PKCS7(&env, &q, dn) == NULL) {
			PKCS7_free(env);
			env = NULL;
		}
		if (!__atomic_exchange_n(&s->warned_des, 1, __ATOMIC_RELAXED))
			slog(s, FG_LEVEL_WARN, NULL, "backend %s: the SCEP CA encrypts its answers with single DES; they hold only certificates, but upgrade the CA",
			     s->name);
	}
	if (env == NULL || !PKCS7_type_is_enveloped(env)) {
		fgp_ssl_err(err, errlen, "the CertRep's content is not a pkcsPKIEnvelope");
		goto out;
	}
	if (PKCS7_decrypt(env, s->signer_key, s->signer, plain, 0) != 1) {
		char alg[80] = "?";
		X509_ALGOR *a = env->d.enveloped->enc_data->algorithm;
		if (a != NULL)
			OBJ_obj2txt(alg, sizeof alg, a->algorithm, 0);
		fgp_ssl_err(err, errlen, "cannot decrypt the CertRep's pkcsPKIEnvelope (%s) with the gateway's SCEP signer key", alg);
		goto out;
	}
	dn = BIO_get_mem_data(plain, &dp);
	q = (const unsigned char *)dp;
	inner = dn > 0 ? d2i_PKCS7(NULL, &q, dn) : NULL;
	if (inner == NULL || !PKCS7_type_is_signed(inner)) {
		fgp_ssl_err(err, errlen, "the CertRep's content is not a certificates-only PKCS#7");
		goto out;
	}
	rep->certs = inner->d.sign->cert;
	inner->d.sign->cert = NULL;
	rep->crls = inner->d.sign->crl;
	inner->d.sign->crl = NULL;
	rc = 0;
out:
	PKCS7_free(p7);
	PKCS7_free(env);
	PKCS7_free(inner);
	sk_X509_free(vs);
	BIO_free(data);
	BIO_free(indata);
	BIO_free(plain);
	return rc;
}

/* RFC 8894 section 3.2.1.4 failInfo, said for an operator and a device. */
static const char *fail_text(int fi)
{
	switch (fi) {
	case 0: return "badAlg: the CA does not accept the algorithms used; check its GetCACaps and the cipher setting";
	case 1: return "badMessageCheck: the CA could not verify the message signature; does it trust the gateway's SCEP signer certificate?";
	case 2: return "badRequest: the CA refused the request (a wrong or used challenge password, or a CSR it will not sign)";
	case 3: return "badTime: the CA says the message time is out of range; check the clocks of the gateway and the CA";
	case 4: return "badCertId: the CA knows no such certificate or transaction";
	default: return "the CA gave no failInfo";
	}
}

/* One exchange: send the message, read and check the CertRep. 0 with rep
 * filled, -1 with err on a transient failure (unreachable, garbled). */
static int exchange(struct scep *s, const struct ca_view *v, int type, const char *txid,
		    const unsigned char *content, size_t clen, struct certrep *rep, char *err,
		    size_t errlen)
{
	unsigned char nonce[NONCE_LEN], *msg = NULL;
	size_t mlen = 0;
	struct fgp_body b = { 0 };
	char ctype[128], *url = NULL, *b64 = NULL;
	int rc = -1;

	if (s->host->random(s->host->ctx, nonce, sizeof nonce) != 0) {
		fgp_seterr(err, errlen, "no randomness for the senderNonce");
		return -1;
	}
	if (build_message(s, v, type, txid, nonce, content, clen, &msg, &mlen, err, errlen) != 0)
		return -1;
	if (v->caps & CAP_POST) {
		if (op_url(s, "PKIOperation", NULL, &url) != 0)
			goto oom;
		rc = http(s, url, msg, mlen, &b, ctype, sizeof ctype, err, errlen);
	} else {
		b64 = malloc(4 * ((mlen + 2) / 3) + 1);
		if (b64 == NULL)
			goto oom;
		EVP_EncodeBlock((unsigned char *)b64, msg, (int)mlen);
		if (op_url(s, "PKIOperation", b64, &url) != 0)
			goto oom;
		rc = http(s, url, NULL, 0, &b, ctype, sizeof ctype, err, errlen);
	}
	if (rc == 0)
		rc = parse_certrep(s, v, b.p, b.n, txid, nonce, rep, err, errlen);
	goto out;
oom:
	fgp_seterr(err, errlen, "out of memory");
	rc = -1;
out:
	OPENSSL_free(msg);
	free(b.p);
	free(url);
	free(b64);
	return rc;
}

/* ---- issuing ---- */

/* A job state value as text: 1 found, 0 not, -1 error. */
static int job_text(const struct scep *s, struct fg_job *job, const char *key, char *out,
		    size_t outlen)
{
	unsigned char *v = NULL;
	size_t n = 0;
	int rc = s->host->job_get(job, key, &v, &n);
	if (rc != 1)
		return rc;
	if (n >= outlen) {
		free(v);
		return -1;
	}
	memcpy(out, v, n);
	out[n] = 0;
	free(v);
	return 1;
}

static int new_txid(const struct scep *s, char out[33])
{
	unsigned char r[16];
	if (s->host->random(s->host->ctx, r, sizeof r) != 0)
		return -1;
	for (size_t i = 0; i < sizeof r; i++)
		snprintf(out + 2 * i, 3, "%02X", r[i]);
	return 0;
}

/* DER SEQUENCE { a, b } of two DER-encoded parts. */
static int der_pair(const unsigned char *a, int la, const unsigned char *b, int lb,
		    unsigned char **out, size_t *len)
{
	int total = ASN1_object_size(1, la + lb, V_ASN1_SEQUENCE);
	unsigned char *buf = total > 0 ? malloc((size_t)total) : NULL, *p = buf;
	if (buf == NULL)
		return -1;
	ASN1_put_object(&p, 1, la + lb, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
	memcpy(p, a, (size_t)la);
	memcpy(p + la, b, (size_t)lb);
	*out = buf;
	*len = (size_t)total;
	return 0;
}

/* CertPoll content, IssuerAndSubject (RFC 8894 section 3.3.3). */
static int issuer_and_subject(X509_NAME *iss, X509_NAME *sub, unsigned char **out, size_t *len)
{
	unsigned char *a = NULL, *b = NULL;
	int la = i2d_X509_NAME(iss, &a), lb = i2d_X509_NAME(sub, &b), rc = -1;
	if (la > 0 && lb > 0)
		rc = der_pair(a, la, b, lb, out, len);
	OPENSSL_free(a);
	OPENSSL_free(b);
	return rc;
}

/* GetCert/GetCRL content, IssuerAndSerialNumber (RFC 8894 section 3.3.4). */
static int issuer_and_serial(X509_NAME *iss, const char *serial_hex, unsigned char **out,
			     size_t *len)
{
	PKCS7_ISSUER_AND_SERIAL *ias = PKCS7_ISSUER_AND_SERIAL_new();
	BIGNUM *bn = NULL;
	unsigned char *der = NULL;
	int n, rc = -1;
	if (ias == NULL || X509_NAME_set(&ias->issuer, iss) != 1 || BN_hex2bn(&bn, serial_hex) <= 0 ||
	    BN_to_ASN1_INTEGER(bn, ias->serial) == NULL)
		goto out;
	if ((n = i2d_PKCS7_ISSUER_AND_SERIAL(ias, &der)) <= 0)
		goto out;
	*out = malloc((size_t)n);
	if (*out == NULL)
		goto out;
	memcpy(*out, der, (size_t)n);
	*len = (size_t)n;
	rc = 0;
out:
	OPENSSL_free(der);
	BN_free(bn);
	PKCS7_ISSUER_AND_SERIAL_free(ias);
	return rc;
}

static unsigned char *to_der(X509 *x, size_t *len)
{
	unsigned char *der = NULL;
	int n = i2d_X509(x, &der);
	if (n <= 0)
		return NULL;
	unsigned char *out = malloc((size_t)n);
	if (out != NULL)
		memcpy(out, der, (size_t)n);
	OPENSSL_free(der);
	*len = (size_t)n;
	return out;
}

/* The leaf matching the CSR's key, with its chain, into res. */
static void take_certificate(struct scep *s, const struct ca_view *v,
			     const struct fg_issue_request *req, EVP_PKEY *csrkey,
			     struct certrep *rep, const char *txid, struct fg_issue_result *res)
{
	X509 *leaf = NULL;
	char msg[400];
	for (int i = 0; i < sk_X509_num(rep->certs); i++) {
		X509 *x = sk_X509_value(rep->certs, i);
		if (EVP_PKEY_eq(X509_get0_pubkey(x), csrkey) == 1) {
			leaf = x;
			break;
		}
	}
	ERR_clear_error();
	if (leaf == NULL) {
		fgp_set_result(res, FG_ISSUE_REJECTED, 0,
			   "the SCEP CA answered transaction %s with no certificate for the device's key", txid);
		return;
	}
	if (fgp_names_granted(leaf, req, 0, msg, sizeof msg) != 0) {
		slog(s, FG_LEVEL_ERROR, req->request_id,
		     "backend %s: %s; the certificate is withheld from the device: revoke it at the CA", s->name, msg);
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "%s", msg);
		return;
	}
	size_t n = 0, cap = (size_t)sk_X509_num(rep->certs) + 1;
	res->chain_der = calloc(cap, sizeof *res->chain_der);
	res->chain_len = calloc(cap, sizeof *res->chain_len);
	res->cert_der = to_der(leaf, &res->cert_len);
	if (res->chain_der == NULL || res->chain_len == NULL || res->cert_der == NULL)
		goto oom;
	int have_ca = 0;
	for (int i = 0; i < sk_X509_num(rep->certs); i++) {
		X509 *x = sk_X509_value(rep->certs, i);
		if (x == leaf)
			continue;
		if (X509_cmp(x, v->ca) == 0)
			have_ca = 1;
		if ((res->chain_der[n] = to_der(x, &res->chain_len[n])) == NULL)
			goto oom;
		res->n_chain = ++n;
	}
	if (!have_ca) {
		if ((res->chain_der[n] = to_der(v->ca, &res->chain_len[n])) == NULL)
			goto oom;
		res->n_chain = ++n;
	}
	fgp_set_result(res, FG_ISSUE_OK, 0, "issued by the SCEP CA (transaction %s)", txid);
	return;
oom:
	fg_issue_result_clear(res);
	fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "out of memory");
}

static int use_renewalreq(const struct scep *s, const struct ca_view *v)
{
	if (s->renewal == REN_RENEWALREQ)
		return 1;
	return s->renewal == REN_AUTO && (v->caps & CAP_RENEWAL) && s->signer_is_ra;
}

/* issue and poll: one exchange for the job, whatever state it is in. */
static int run_job(void *state, const struct fg_issue_request *req, struct fg_issue_result *res)
{
	struct scep *s = state;
	char txid[80], st[16] = "", err[512] = "";
	const unsigned char *q = req->csr_der;
	X509_REQ *csr = d2i_X509_REQ(NULL, &q, (long)req->csr_len);
	struct ca_view *v = NULL;
	struct certrep rep;
	unsigned char *content = NULL;
	size_t clen = 0;
	int rc;

	memset(&rep, 0, sizeof rep);
	if (csr == NULL) {
		ERR_clear_error();
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "the stored CSR cannot be read");
		return 0;
	}
	rc = job_text(s, req->job, "scep.txid", txid, sizeof txid);
	if (rc == 0 && (new_txid(s, txid) != 0 ||
			s->host->job_put(req->job, "scep.txid", (unsigned char *)txid, strlen(txid)) != 0))
		rc = -1;
	if (rc < 0) {
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "cannot keep the SCEP transaction in the job store");
		goto out;
	}
	if (job_text(s, req->job, "scep.state", st, sizeof st) < 0) {
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "cannot read the SCEP job state");
		goto out;
	}
	if ((v = view_get(s, 0, err, sizeof err)) == NULL) {
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "%s", err);
		goto out;
	}
	int type;
	if (strcmp(st, "pending") == 0) {
		type = MT_CERTPOLL;
		if (issuer_and_subject(X509_get_subject_name(v->ca), X509_REQ_get_subject_name(csr),
				       &content, &clen) != 0) {
			fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "cannot encode the CertPoll");
			goto out;
		}
	} else {
		type = req->renewal && use_renewalreq(s, v) ? MT_RENEWALREQ : MT_PKCSREQ;
	}
	if (exchange(s, v, type, txid, content ? content : req->csr_der, content ? clen : req->csr_len,
		     &rep, err, sizeof err) != 0) {
		/* a changed CA certificate shows up as a failed exchange:
		 * fetch it again next time */
		view_put(s, v);
		v = NULL;
		pthread_mutex_lock(&s->mu);
		if (s->view)
			s->view->fetched = 0;
		pthread_mutex_unlock(&s->mu);
		slog(s, FG_LEVEL_WARN, req->request_id, "backend %s: transaction %s: %s", s->name, txid, err);
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "%s", err);
		goto out;
	}
	switch (rep.status) {
	case PKI_PENDING:
		if (strcmp(st, "pending") != 0 &&
		    s->host->job_put(req->job, "scep.state", (const unsigned char *)"pending", 7) != 0) {
			fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "cannot record the pending SCEP transaction");
			break;
		}
		slog(s, FG_LEVEL_INFO, req->request_id, "backend %s: transaction %s pending at the CA; polling every %u s",
		     s->name, txid, s->poll_interval);
		fgp_set_result(res, FG_ISSUE_PENDING, s->poll_interval,
			   "SCEP transaction %s awaits approval at the CA", txid);
		break;
	case PKI_FAILURE:
		slog(s, FG_LEVEL_WARN, req->request_id, "backend %s: transaction %s refused: %s", s->name,
		     txid, fail_text(rep.fail_info));
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "%s", fail_text(rep.fail_info));
		break;
	default:
		take_certificate(s, v, req, X509_REQ_get0_pubkey(csr), &rep, txid, res);
	}
out:
	certrep_clear(&rep);
	free(content);
	view_put(s, v);
	X509_REQ_free(csr);
	return 0;
}

static int scep_csr_needs(void *state, const struct fg_issue_request *req,
			  struct fg_csr_needs *needs, char *err, size_t errlen)
{
	struct scep *s = state;
	const char *c = req->challenge && req->challenge[0] ? req->challenge : s->challenge;
	memset(needs, 0, sizeof *needs);
	needs->names_from_csr = 1;
	if (strlen(c) >= sizeof needs->challenge) {
		fgp_seterr(err, errlen, "the SCEP challenge is longer than %zu characters", sizeof needs->challenge - 1);
		return -1;
	}
	snprintf(needs->challenge, sizeof needs->challenge, "%s", c);
	return 0;
}

/* The CA certificate last fetched, kept in plugin state so that bundles
 * can be made while the SCEP server is away; checked against the pin. */
static X509 *stored_ca(struct scep *s)
{
	unsigned char *der = NULL, d[32];
	size_t len = 0;
	X509 *x = NULL;
	if (s->host->state_get(s->host->ctx, "ca_cert", &der, &len) == 1) {
		const unsigned char *q = der;
		x = d2i_X509(NULL, &q, (long)len);
		if (x != NULL && (cert_sha256(x, d) != 0 || memcmp(d, s->pin, 32) != 0)) {
			X509_free(x);
			x = NULL;
		}
	}
	ERR_clear_error();
	free(der);
	return x;
}

static int scep_cacerts(void *state, struct fg_cert_list *out, char *err, size_t errlen)
{
	struct scep *s = state;
	struct ca_view *v = view_get(s, 0, err, errlen);
	X509 *ca = v ? v->ca : stored_ca(s);
	memset(out, 0, sizeof *out);
	if (ca == NULL)
		return -1;
	if (v == NULL)
		slog(s, FG_LEVEL_WARN, NULL, "backend %s: %s; using the CA certificate fetched before", s->name, err);
	out->der = calloc(1, sizeof *out->der);
	out->len = calloc(1, sizeof *out->len);
	int rc = 0;
	if (out->der == NULL || out->len == NULL || (out->der[0] = to_der(ca, &out->len[0])) == NULL) {
		fg_cert_list_clear(out);
		fgp_seterr(err, errlen, "out of memory");
		rc = -1;
	} else {
		out->n = 1;
	}
	if (v != NULL)
		view_put(s, v);
	else
		X509_free(ca);
	return rc;
}

static int scep_revoke(void *state, const unsigned char *cert_der, size_t cert_len,
		       enum fg_revoke_reason reason, char *err, size_t errlen)
{
	struct scep *s = state;
	const unsigned char *q = cert_der;
	X509 *x = d2i_X509(NULL, &q, (long)cert_len);
	char *hex = NULL;
	if (x != NULL) {
		BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
		hex = bn ? BN_bn2hex(bn) : NULL;
		BN_free(bn);
	}
	ERR_clear_error();
	fgp_seterr(err, errlen, "SCEP has no revocation message: revoke serial %s at the CA behind backend %s yourself (fleetgate has marked it revoked)",
	       hex ? hex : "?", s->name);
	OPENSSL_free(hex);
	X509_free(x);
	return -1;
}

/* GetCert and GetCRL: one exchange under a fresh transactionID. */
static int inspect(struct scep *s, int type, const char *serial_hex, unsigned char **der,
		   size_t *len, char *err, size_t errlen)
{
	struct ca_view *v = view_get(s, 0, err, errlen);
	struct certrep rep;
	unsigned char *content = NULL;
	size_t clen = 0;
	char txid[33], sbuf[80];
	int rc = -1;

	memset(&rep, 0, sizeof rep);
	*der = NULL;
	if (v == NULL)
		return -1;
	if (serial_hex == NULL) {
		BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(v->ca), NULL);
		char *h = bn ? BN_bn2hex(bn) : NULL;
		snprintf(sbuf, sizeof sbuf, "%s", h ? h : "0");
		OPENSSL_free(h);
		BN_free(bn);
		serial_hex = sbuf;
	}
	if (new_txid(s, txid) != 0 ||
	    issuer_and_serial(X509_get_subject_name(v->ca), serial_hex, &content, &clen) != 0) {
		fgp_seterr(err, errlen, "cannot build the request (serial '%s' must be hex)", serial_hex);
		goto out;
	}
	if (exchange(s, v, type, txid, content, clen, &rep, err, errlen) != 0)
		goto out;
	if (rep.status != PKI_SUCCESS) {
		fgp_seterr(err, errlen, "the SCEP CA answered %s: %s", rep.status == PKI_PENDING ? "PENDING" : "FAILURE",
		       rep.status == PKI_PENDING ? "try again later" : fail_text(rep.fail_info));
		goto out;
	}
	int n = 0;
	unsigned char *tmp = NULL;
	if (type == MT_GETCERT && sk_X509_num(rep.certs) > 0)
		n = i2d_X509(sk_X509_value(rep.certs, 0), &tmp);
	else if (type == MT_GETCRL && sk_X509_CRL_num(rep.crls) > 0)
		n = i2d_X509_CRL(sk_X509_CRL_value(rep.crls, 0), &tmp);
	if (n <= 0) {
		fgp_seterr(err, errlen, "the SCEP CA's answer holds no %s", type == MT_GETCERT ? "certificate" : "CRL");
		goto out;
	}
	*der = malloc((size_t)n);
	if (*der == NULL) {
		OPENSSL_free(tmp);
		fgp_seterr(err, errlen, "out of memory");
		goto out;
	}
	memcpy(*der, tmp, (size_t)n);
	*len = (size_t)n;
	OPENSSL_free(tmp);
	rc = 0;
out:
	ERR_clear_error();
	certrep_clear(&rep);
	free(content);
	view_put(s, v);
	return rc;
}

static int scep_fetch_cert(void *state, const char *serial_hex, unsigned char **der, size_t *len,
			   char *err, size_t errlen)
{
	return inspect(state, MT_GETCERT, serial_hex, der, len, err, errlen);
}

static int scep_fetch_crl(void *state, unsigned char **der, size_t *len, char *err, size_t errlen)
{
	return inspect(state, MT_GETCRL, NULL, der, len, err, errlen);
}

/* ---- the signer ---- */

/* Write data to dir/name durably, only if name does not exist yet (another
 * process may race us: its file wins). 0, or -1 with errno. */
static int write_new(const char *dir, const char *name, const void *data, size_t len, mode_t mode)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	snprintf(dst, sizeof dst, "%s/%s", dir, name);
	snprintf(tmp, sizeof tmp, "%s/.%s.%ld", dir, name, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	int ok = write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
	close(fd);
	if (!ok || (link(tmp, dst) != 0 && errno != EEXIST)) {
		unlink(tmp);
		return -1;
	}
	unlink(tmp);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

static int mkdirs(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, mode) != 0 && errno != EEXIST ? -1 : 0;
}

static char *mem_text(BIO *b, size_t *n)
{
	char *p;
	long l = BIO_get_mem_data(b, &p);
	*n = l > 0 ? (size_t)l : 0;
	return p;
}

/* The self-signed requester certificate (RFC 8894 section 2.3): RSA 2048,
 * made once per backend and kept. */
static int signer_make(struct scep *s, const char *dir, char *err, size_t errlen)
{
	EVP_PKEY *k = EVP_RSA_gen(2048);
	X509 *x = X509_new();
	BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());
	char cn[128];
	unsigned char rnd[16];
	BIGNUM *bn = NULL;
	int rc = -1;

	snprintf(cn, sizeof cn, "fleetgate SCEP requester %s", s->name);
	if (k == NULL || x == NULL || kb == NULL || cb == NULL || s->host->random(s->host->ctx, rnd, sizeof rnd) != 0)
		goto fail;
	rnd[0] &= 0x7f;
	bn = BN_bin2bn(rnd, sizeof rnd, NULL);
	X509_NAME *nm = X509_get_subject_name(x);
	if (bn == NULL || X509_set_version(x, 2) != 1 ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
	    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8, (unsigned char *)cn, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, nm) != 1 || X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 86400) == NULL || X509_set_pubkey(x, k) != 1)
		goto fail;
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *e1 = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,digitalSignature,keyEncipherment");
	X509_EXTENSION *e2 = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:FALSE");
	int ok = e1 && e2 && X509_add_ext(x, e1, -1) == 1 && X509_add_ext(x, e2, -1) == 1;
	X509_EXTENSION_free(e1);
	X509_EXTENSION_free(e2);
	if (!ok || X509_sign(x, k, EVP_sha256()) <= 0 ||
	    PEM_write_bio_PrivateKey(kb, k, NULL, NULL, 0, NULL, NULL) != 1 || PEM_write_bio_X509(cb, x) != 1)
		goto fail;
	size_t kn, cn2;
	char *kp = mem_text(kb, &kn), *cp = mem_text(cb, &cn2);
	/* key first: a certificate file never exists without its key */
	if (write_new(dir, "signer.key", kp, kn, 0600) != 0 || write_new(dir, "signer.crt", cp, cn2, 0644) != 0) {
		fgp_seterr(err, errlen, "cannot write the SCEP signer in %s: %s", dir, strerror(errno));
		goto out;
	}
	slog(s, FG_LEVEL_INFO, NULL, "backend %s: made the self-signed SCEP signer %s/signer.crt", s->name, dir);
	rc = 0;
	goto out;
fail:
	fgp_ssl_err(err, errlen, "cannot make the SCEP signer certificate");
out:
	BN_free(bn);
	BIO_free(kb);
	BIO_free(cb);
	X509_free(x);
	EVP_PKEY_free(k);
	return rc;
}

static int signer_load(struct scep *s, const char *cert, const char *key, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(cert, "r");
	s->signer = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	b = BIO_new_file(key, "r");
	s->signer_key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (s->signer == NULL || s->signer_key == NULL) {
		fgp_ssl_err(err, errlen, "cannot read the SCEP signer %s and %s (PEM certificate and key)", cert, key);
		return -1;
	}
	if (EVP_PKEY_get_base_id(s->signer_key) != EVP_PKEY_RSA) {
		fgp_seterr(err, errlen, "the SCEP signer key %s is not RSA; the CA encrypts its answer to the signer, which needs RSA", key);
		return -1;
	}
	if (X509_check_private_key(s->signer, s->signer_key) != 1) {
		fgp_ssl_err(err, errlen, "the SCEP signer certificate %s does not match the key %s", cert, key);
		return -1;
	}
	return 0;
}

/* ---- open/close ---- */

static void scep_close(void *state)
{
	struct scep *s = state;
	if (s == NULL)
		return;
	view_put(s, s->view);
	X509_free(s->signer);
	EVP_PKEY_free(s->signer_key);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

static int scep_open(const struct fg_host *host, const struct fg_kv *kv, size_t n, void **state,
		     char *err, size_t errlen)
{
	struct scep *s = calloc(1, sizeof *s);
	const char *v;
	long l;

	*state = NULL;
	if (s == NULL) {
		fgp_seterr(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_init(&s->mu, NULL);
	s->host = host;
	snprintf(s->name, sizeof s->name, "%s", (v = fg_kv_get(kv, n, "name")) ? v : "scep");
	pthread_once(&nids_once, nids_init);
	if (!nids_ok) {
		fgp_ssl_err(err, errlen, "backend %s: cannot register the SCEP attribute OIDs", s->name);
		goto fail;
	}
	static const char *known[] = { "name", "state_dir", "create", "url", "ca_fingerprint", "challenge",
		"ca_identifier", "signer_cert", "signer_key", "renewal", "cipher", "tls_ca_file", "timeout",
		"poll_interval", "cache_ttl", NULL };
	for (size_t i = 0; i < n; i++) {
		size_t k = 0;
		while (known[k] && strcmp(known[k], kv[i].key) != 0)
			k++;
		if (known[k] == NULL) {
			fgp_seterr(err, errlen, "backends.%s: unknown setting '%s' for the scep plugin (known: url, ca_fingerprint, challenge, ca_identifier, signer_cert, signer_key, renewal, cipher, tls_ca_file, timeout, poll_interval, cache_ttl)",
			       s->name, kv[i].key);
			goto fail;
		}
	}
	v = fg_kv_get(kv, n, "url");
	if (v == NULL || (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) ||
	    strlen(v) >= sizeof s->url) {
		fgp_seterr(err, errlen, "backends.%s: set url = \"http(s)://host[:port]/path\" of the SCEP service", s->name);
		goto fail;
	}
	snprintf(s->url, sizeof s->url, "%s", v);
	v = fg_kv_get(kv, n, "ca_fingerprint");
	if (v == NULL || fgp_parse_pin(v, s->pin) != 0) {
		fgp_seterr(err, errlen, "backends.%s: set ca_fingerprint = the SHA-256 of the SCEP CA certificate in hex (for example from `openssl x509 -in ca.pem -noout -fingerprint -sha256`), so the gateway can tell the CA from an impostor",
		       s->name);
		goto fail;
	}
	if ((v = fg_kv_get(kv, n, "challenge")) != NULL) {
		if (strlen(v) >= sizeof s->challenge) {
			fgp_seterr(err, errlen, "backends.%s.challenge: at most %zu characters", s->name, sizeof s->challenge - 1);
			goto fail;
		}
		snprintf(s->challenge, sizeof s->challenge, "%s", v);
	}
	snprintf(s->ca_ident, sizeof s->ca_ident, "%s", (v = fg_kv_get(kv, n, "ca_identifier")) ? v : "");
	snprintf(s->tls_ca_file, sizeof s->tls_ca_file, "%s", (v = fg_kv_get(kv, n, "tls_ca_file")) ? v : "");
	v = fg_kv_get(kv, n, "renewal");
	if (v == NULL || strcmp(v, "auto") == 0)
		s->renewal = REN_AUTO;
	else if (strcmp(v, "pkcsreq") == 0)
		s->renewal = REN_PKCSREQ;
	else if (strcmp(v, "renewalreq") == 0)
		s->renewal = REN_RENEWALREQ;
	else {
		fgp_seterr(err, errlen, "backends.%s.renewal: '%s' is not auto, pkcsreq or renewalreq", s->name, v);
		goto fail;
	}
	v = fg_kv_get(kv, n, "cipher");
	if (v != NULL && strcmp(v, "auto") != 0 && strcmp(v, "aes256") != 0) {
		fgp_seterr(err, errlen, "backends.%s.cipher: '%s' is not auto or aes256", s->name, v);
		goto fail;
	}
	s->aes256 = v != NULL && strcmp(v, "aes256") == 0;
	if (fgp_num_setting(kv, n, "timeout", 30, 1, 600, &s->timeout) != 0) {
		fgp_seterr(err, errlen, "backends.%s.timeout: seconds, 1 to 600", s->name);
		goto fail;
	}
	if (fgp_num_setting(kv, n, "poll_interval", 60, 1, 86400, &l) != 0) {
		fgp_seterr(err, errlen, "backends.%s.poll_interval: seconds, 1 to 86400", s->name);
		goto fail;
	}
	s->poll_interval = (uint32_t)l;
	if (fgp_num_setting(kv, n, "cache_ttl", 3600, 0, 7 * 86400, &l) != 0) {
		fgp_seterr(err, errlen, "backends.%s.cache_ttl: seconds, 0 to 604800", s->name);
		goto fail;
	}
	s->cache_ttl = l;

	const char *sc = fg_kv_get(kv, n, "signer_cert"), *sk = fg_kv_get(kv, n, "signer_key");
	const char *sd = fg_kv_get(kv, n, "state_dir");
	char cpath[PATH_MAX], kpath[PATH_MAX], dir[PATH_MAX - 32];
	if ((sc == NULL) != (sk == NULL)) {
		fgp_seterr(err, errlen, "backends.%s: set both signer_cert and signer_key, or neither (a self-signed signer is made)", s->name);
		goto fail;
	}
	if (sc != NULL) {
		snprintf(cpath, sizeof cpath, "%s%s%s", sc[0] == '/' ? "" : sd, sc[0] == '/' ? "" : "/", sc);
		snprintf(kpath, sizeof kpath, "%s%s%s", sk[0] == '/' ? "" : sd, sk[0] == '/' ? "" : "/", sk);
		s->signer_is_ra = 1;
	} else {
		snprintf(dir, sizeof dir, "%s/scep/%s", sd ? sd : ".", s->name);
		snprintf(cpath, sizeof cpath, "%s/signer.crt", dir);
		snprintf(kpath, sizeof kpath, "%s/signer.key", dir);
		if (access(cpath, F_OK) != 0) {
			if (mkdirs(dir, 0700) != 0) {
				fgp_seterr(err, errlen, "backends.%s: cannot create %s: %s", s->name, dir, strerror(errno));
				goto fail;
			}
			if (signer_make(s, dir, err, errlen) != 0)
				goto fail;
		}
	}
	if (signer_load(s, cpath, kpath, err, errlen) != 0)
		goto fail;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		fgp_seterr(err, errlen, "backends.%s: libcurl would not initialise", s->name);
		goto fail;
	}
	*state = s;
	return 0;
fail:
	scep_close(s);
	return -1;
}

static const struct fg_backend_ops scep_ops = {
	.abi_version = FG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct fg_backend_ops),
	.name = "scep",
	.description = "SCEP (RFC 8894) requester for an upstream CA",
	.open = scep_open,
	.issue = run_job,
	.poll = run_job,
	.revoke = scep_revoke,
	.cacerts = scep_cacerts,
	.close = scep_close,
	.csr_needs = scep_csr_needs,
	.fetch_cert = scep_fetch_cert,
	.fetch_crl = scep_fetch_crl,
};

__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void);
__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void)
{
	return &scep_ops;
}
