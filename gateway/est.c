/*
 * est.c: the EST front-end of fleetgated (see est.h and docs/est.md).
 *
 * Everything below runs on the EST threads except est_start (setup in the
 * caller, so that a bad certificate or a bind failure stops the daemon
 * before it serves) and est_stop. Each thread owns a worker (enroll.h): an
 * enrollment is handled synchronously on its thread, exactly as a ZeroMQ
 * worker handles one.
 *
 * Identity of an EST device (it has no CURVE key): the enrollment core keys
 * devices and jobs by a 40-character identity. An EST enrollment uses
 * "est:" + the first 36 hex digits of the SHA-256 of the CSR's
 * SubjectPublicKeyInfo, so the device is its key pair; a re-enrollment is
 * found through the TLS client certificate (its serial names the device in
 * the store) and runs under that device's identity. The request id is
 * "est-" + 60 hex digits of the SHA-256 of the CSR: RFC 7030 4.2.3 has the
 * client resend the same request after a 202, so the same CSR from the same
 * identity finds the same job (its stored answer, or the pending job
 * resumed), across gateway restarts.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ec.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "enroll.h"
#include "dashboard.h"
#include "est.h"
#include "fg_log.h"
#include "fg_util.h"
#include "fg_wire.h"
#include "fg_x509.h"
#include "policy.h"
#include "store.h"

#define EST_MAX_BODY (64 * 1024)    /* a base64 CSR: an RSA-8192 one is about 2.5 KiB */
#define EST_MAX_HEADERS 16384
#define EST_TIMEOUT 30              /* seconds a connection may idle mid-request */
#define EST_PREFIX "/.well-known/est/"
#define EST_DEFAULT_SLOT "est"      /* slot of an enrollment without label */
#define EST_REALM "fleetgate EST"

struct est;

/* One EST thread: its own event loop and evhttp on the shared listening
 * socket, and its own enrollment worker. */
struct est_thread {
	struct est *e;
	int index;
	struct worker *w;             /* store connection and policy state */
	uint64_t policy_gen;          /* generation w's policy was compiled from */
	struct event_base *base;
	struct evhttp *http;
	pthread_t thread;
	int started;
};

struct est {
	const struct gw_config *cfg;
	struct backends *bs;
	struct policy_reload *pr;
	SSL_CTX *ssl;                 /* shared: OpenSSL makes SSL_new thread-safe */
	struct est_thread *t;
	int nthreads;
	struct dashboard *dash;       /* ui.enabled: the dashboard, over HTTPS */
};

enum est_op { OP_CACERTS, OP_CSRATTRS, OP_ENROLL, OP_REENROLL, OP_SERVERKEYGEN, OP_MAX };

/* ---- replies ---- */

/* A text body with the status; every error says what failed and what to do. */
static void __attribute__((format(printf, 4, 5)))
reply_text(struct evhttp_request *req, int code, const char *reason, const char *fmt, ...)
{
	char msg[1200];
	va_list ap;
	int n;
	struct evbuffer *b = evbuffer_new();

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof msg - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof msg - 2)
		n = (int)sizeof msg - 2;
	msg[n++] = '\n';
	if (b == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; charset=utf-8");
	evbuffer_add(b, msg, (size_t)n);
	evhttp_send_reply(req, code, reason, b);
	evbuffer_free(b);
	fg_log(code >= 500 ? FG_LOG_WARN : FG_LOG_INFO, "est", NULL, "%s %s: %d %.*s",
	       evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST" : "GET",
	       evhttp_request_get_uri(req), code, n - 1, msg);
}

/* Base64 of der appended to b (RFC 7030 4.1.3, RFC 8951 3.2): one line,
 * ended by CRLF. The two kinds of EST client disagree on line breaks:
 * strongSwan's pki as Debian 12 ships it (5.9.8) decodes the body as it
 * comes and fails on any break inside it, but ignores what follows the last
 * full quantum; OpenSSL's base64 BIO (the usual C client) needs a line end
 * and reads lines of up to about 1000 characters. One line with a final
 * CRLF is read by both for answers of up to 760 bytes of DER (a /cacerts
 * with an EC CA, /csrattrs, an EC certificate); for a larger
 * answer only clients that take long lines or skip breaks can read it
 * (docs/est.md). 0, or -1 when out of memory. */
static int add_base64(struct evbuffer *b, const unsigned char *der, size_t len)
{
	unsigned char line[64 + 3];
	int rc = 0;

	for (size_t off = 0; off < len && rc == 0; off += 48) {
		size_t chunk = len - off < 48 ? len - off : 48;
		int n = EVP_EncodeBlock(line, der + off, (int)chunk);
		rc = evbuffer_add(b, line, (size_t)n);
	}
	if (rc == 0)
		rc = evbuffer_add(b, "\r\n", 2);
	OPENSSL_cleanse(line, sizeof line);
	return rc;
}

/* DER in, base64 out (add_base64), as the body of a 200 with ctype. */
static void reply_base64(struct evhttp_request *req, const char *ctype, const unsigned char *der,
			 size_t len)
{
	struct evbuffer *b = evbuffer_new();

	if (b == NULL || add_base64(b, der, len) != 0) {
		if (b)
			evbuffer_free(b);
		reply_text(req, 500, "Internal Server Error", "out of memory encoding the answer; retry");
		return;
	}
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
	evhttp_add_header(hdr, "Content-Type", ctype);
	evhttp_add_header(hdr, "Content-Transfer-Encoding", "base64");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

/* A certs-only PKCS#7 SignedData (RFC 5652 degenerate form) holding certs,
 * DER, malloc'd; NULL when out of memory or a certificate is unreadable. */
static unsigned char *certs_only(unsigned char *const *der, const size_t *len, size_t n,
				 size_t *outlen)
{
	PKCS7 *p7 = PKCS7_new();
	unsigned char *out = NULL, *q;
	int l;

	if (p7 == NULL || !PKCS7_set_type(p7, NID_pkcs7_signed) ||
	    !PKCS7_content_new(p7, NID_pkcs7_data))
		goto out;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *pp = der[i];
		X509 *x = d2i_X509(NULL, &pp, (long)len[i]);
		int ok = x != NULL && PKCS7_add_certificate(p7, x);
		X509_free(x);
		if (!ok)
			goto out;
	}
	l = i2d_PKCS7(p7, NULL);
	if (l <= 0 || (out = malloc((size_t)l)) == NULL)
		goto out;
	q = out;
	i2d_PKCS7(p7, &q);
	*outlen = (size_t)l;
out:
	PKCS7_free(p7);
	ERR_clear_error();
	return out;
}

/* ---- request parsing ---- */

/* Base64 text (any whitespace, RFC 8951) -> DER, malloc'd. NULL when it is
 * not base64. */
static unsigned char *unbase64(const char *in, size_t inlen, size_t *outlen)
{
	char *clean = malloc(inlen + 1);
	unsigned char *out = malloc(inlen / 4 * 3 + 4);
	size_t n = 0;
	int a = 0, b = 0;
	EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();

	if (clean == NULL || out == NULL || ctx == NULL)
		goto fail;
	for (size_t i = 0; i < inlen; i++)
		if (in[i] != ' ' && in[i] != '\t' && in[i] != '\r' && in[i] != '\n')
			clean[n++] = in[i];
	if (n == 0 || n % 4 != 0)
		goto fail;
	EVP_DecodeInit(ctx);
	if (EVP_DecodeUpdate(ctx, out, &a, (unsigned char *)clean, (int)n) < 0 ||
	    EVP_DecodeFinal(ctx, out + a, &b) < 0 || a + b == 0)
		goto fail;
	*outlen = (size_t)(a + b);
	free(clean);
	EVP_ENCODE_CTX_free(ctx);
	return out;
fail:
	free(clean);
	free(out);
	EVP_ENCODE_CTX_free(ctx);
	return NULL;
}

/* The password of an "Authorization: Basic" header (RFC 7617) into pass;
 * 1 when there is one, 0 when the header is absent or not Basic, -1 when
 * it is malformed. */
static int basic_password(struct evhttp_request *req, char *pass, size_t passlen)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	unsigned char *dec;
	size_t n;
	int rc = -1;

	if (h == NULL || strncasecmp(h, "Basic ", 6) != 0)
		return 0;
	h += 6;
	while (*h == ' ')
		h++;
	dec = unbase64(h, strlen(h), &n);
	if (dec == NULL)
		return -1;
	const unsigned char *colon = memchr(dec, ':', n);
	if (colon != NULL) {
		size_t pl = n - (size_t)(colon + 1 - dec);
		if (pl < passlen && memchr(colon + 1, '\0', pl) == NULL) {
			memcpy(pass, colon + 1, pl);
			pass[pl] = '\0';
			rc = 1;
		}
	}
	OPENSSL_cleanse(dec, n);
	free(dec);
	return rc;
}

/* "/.well-known/est/[label/]op" -> op and label ("" when none). -1 when the
 * path is not an EST path, -2 when the operation is unknown. */
static int parse_path(const char *path, char *label, size_t labellen, enum est_op *op)
{
	static const char *const names[OP_MAX] = { "cacerts", "csrattrs", "simpleenroll",
						   "simplereenroll", "serverkeygen" };
	const char *rest, *slash, *opname;

	if (strncmp(path, EST_PREFIX, strlen(EST_PREFIX)) != 0)
		return -1;
	rest = path + strlen(EST_PREFIX);
	label[0] = '\0';
	slash = strchr(rest, '/');
	if (slash != NULL) {
		if ((size_t)(slash - rest) >= labellen || slash == rest || strchr(slash + 1, '/'))
			return -1;
		memcpy(label, rest, (size_t)(slash - rest));
		label[slash - rest] = '\0';
		opname = slash + 1;
	} else {
		opname = rest;
	}
	for (int i = 0; i < OP_MAX; i++)
		if (strcmp(opname, names[i]) == 0) {
			*op = (enum est_op)i;
			return 0;
		}
	return -2;
}

/* ---- TLS facts of the request ---- */

static SSL *request_ssl(struct evhttp_request *req)
{
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	struct bufferevent *bev = c ? evhttp_connection_get_bufferevent(c) : NULL;
	return bev ? bufferevent_openssl_get_ssl(bev) : NULL;
}

/* The tls-unique channel binding (RFC 5929 3.1) of a TLS 1.2 connection,
 * base64, into out: the first Finished message of the latest handshake,
 * the client's in a full handshake, the server's in a resumed one. 0, or
 * -1 when the connection has none (TLS 1.3, RFC 8446 / RFC 9266). */
static int tls_unique_b64(SSL *ssl, char *out, size_t outlen)
{
	unsigned char fin[64];
	size_t n;

	if (SSL_version(ssl) != TLS1_2_VERSION)
		return -1;
	n = SSL_session_reused(ssl) ? SSL_get_finished(ssl, fin, sizeof fin)
				    : SSL_get_peer_finished(ssl, fin, sizeof fin);
	if (n == 0 || n > sizeof fin || outlen < 4 * ((n + 2) / 3) + 1)
		return -1;
	EVP_EncodeBlock((unsigned char *)out, fin, (int)n);
	return 0;
}

/* The challengePassword attribute of a CSR (RFC 2985 5.4.1) into out: 1
 * when present, 0 when absent, -1 when unreadable. */
static int csr_challenge(X509_REQ *csr, char *out, size_t outlen)
{
	int i = X509_REQ_get_attr_by_NID(csr, NID_pkcs9_challengePassword, -1);
	if (i < 0)
		return 0;
	X509_ATTRIBUTE *a = X509_REQ_get_attr(csr, i);
	ASN1_TYPE *t = a ? X509_ATTRIBUTE_get0_type(a, 0) : NULL;
	if (t == NULL || (t->type != V_ASN1_UTF8STRING && t->type != V_ASN1_PRINTABLESTRING &&
			  t->type != V_ASN1_IA5STRING && t->type != V_ASN1_T61STRING))
		return -1;
	const ASN1_STRING *s = t->value.asn1_string;
	if ((size_t)ASN1_STRING_length(s) >= outlen)
		return -1;
	memcpy(out, ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
	out[ASN1_STRING_length(s)] = '\0';
	return 1;
}

/* The subjectAltName of a CSR (from its extensionRequest) or NULL. */
static GENERAL_NAMES *csr_san(X509_REQ *csr)
{
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(csr);
	GENERAL_NAMES *gn = exts ? X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL) : NULL;
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return gn;
}

/* 1 when a and b hold the same names (in any order); NULL is empty. */
static int same_names(GENERAL_NAMES *a, GENERAL_NAMES *b)
{
	int na = a ? sk_GENERAL_NAME_num(a) : 0, nb = b ? sk_GENERAL_NAME_num(b) : 0;
	if (na != nb)
		return 0;
	for (int i = 0; i < na; i++) {
		int found = 0;
		for (int j = 0; j < nb && !found; j++)
			found = GENERAL_NAME_cmp(sk_GENERAL_NAME_value(a, i), sk_GENERAL_NAME_value(b, j)) == 0;
		if (!found)
			return 0;
	}
	return 1;
}

/* RFC 7030 4.2.2: a re-enrollment CSR names exactly the subject and the
 * subjectAltName of the certificate being renewed. 0, or -1 with why. */
static int reenroll_subject_check(X509_REQ *csr, X509 *cur, char *why, size_t whylen)
{
	char want[256], got[256];
	int rc = -1;
	GENERAL_NAMES *cs = csr_san(csr), *xs = X509_get_ext_d2i(cur, NID_subject_alt_name, NULL, NULL);

	if (X509_NAME_cmp(X509_REQ_get_subject_name(csr), X509_get_subject_name(cur)) != 0) {
		X509_NAME_oneline(X509_get_subject_name(cur), want, sizeof want);
		X509_NAME_oneline(X509_REQ_get_subject_name(csr), got, sizeof got);
		fg_seterr(why, whylen, "the CSR subject %s differs from the subject %s of the client certificate; RFC 7030 4.2.2 has a re-enrollment name the same subject (use simpleenroll with a token for a new name)",
			  got, want);
		goto out;
	}
	if (!same_names(cs, xs)) {
		fg_seterr(why, whylen, "the CSR subjectAltName differs from the client certificate's; RFC 7030 4.2.2 has a re-enrollment ask for the same names (use simpleenroll with a token for new names)");
		goto out;
	}
	rc = 0;
out:
	GENERAL_NAMES_free(cs);
	GENERAL_NAMES_free(xs);
	return rc;
}

/* ---- operations ---- */

/* The profile a label selects ("" label: "default"); NULL when the label
 * is not configured. */
static const char *label_profile(struct est *e, const char *label)
{
	if (label[0] == '\0')
		return "default";
	const struct config_est_label *l = config_est_label(e->cfg, label);
	return l ? l->profile : NULL;
}

static void on_cacerts(struct est *e, struct evhttp_request *req, const char *profile)
{
	const struct config_profile *p = config_profile(e->cfg, profile);
	struct backend *b = p ? backends_find(e->bs, p->backend) : NULL;
	struct fg_cert_list cl;
	char err[512] = "";
	unsigned char *der = NULL;
	size_t len = 0;

	memset(&cl, 0, sizeof cl);
	if (b == NULL || b->ops->cacerts == NULL) {
		reply_text(req, 501, "Not Implemented",
			   "profile '%s' issues through a backend that has no CA certificates to give; ask the operator for the trust anchors",
			   profile);
		return;
	}
	if (b->ops->cacerts(b->state, &cl, err, sizeof err) != 0 || cl.n == 0) {
		reply_text(req, 503, "Service Unavailable",
			   "the CA certificates of backend %s cannot be read now: %s; retry later",
			   p->backend, err[0] ? err : "none available");
		fg_cert_list_clear(&cl);
		return;
	}
	der = certs_only(cl.der, cl.len, cl.n, &len);
	if (der == NULL)
		reply_text(req, 500, "Internal Server Error",
			   "the CA certificates of backend %s could not be packed as PKCS#7; tell the operator",
			   p->backend);
	else
		reply_base64(req, "application/pkcs7-mime", der, len);
	free(der);
	fg_cert_list_clear(&cl);
}

/* RFC 7030 4.5.2 CsrAttrs: SEQUENCE OF AttrOrOID. We advise the
 * challengePassword attribute (it carries the tls-unique binding, RFC 7030
 * 3.5) and ecdsa-with-SHA256 as the signature algorithm. */
static void on_csrattrs(struct evhttp_request *req)
{
	static const int nids[] = { NID_pkcs9_challengePassword, NID_ecdsa_with_SHA256 };
	STACK_OF(ASN1_TYPE) *sk = sk_ASN1_TYPE_new_null();
	unsigned char *der = NULL;
	int len = -1;

	for (size_t i = 0; sk != NULL && i < sizeof nids / sizeof nids[0]; i++) {
		ASN1_TYPE *t = ASN1_TYPE_new();
		ASN1_OBJECT *o = OBJ_nid2obj(nids[i]);
		if (t == NULL || o == NULL) {
			ASN1_TYPE_free(t);
			goto out;
		}
		ASN1_TYPE_set(t, V_ASN1_OBJECT, o);
		if (!sk_ASN1_TYPE_push(sk, t)) {
			ASN1_TYPE_free(t);
			goto out;
		}
	}
	if (sk != NULL)
		len = i2d_ASN1_SEQUENCE_ANY(sk, &der);
out:
	if (len <= 0)
		reply_text(req, 500, "Internal Server Error", "out of memory encoding the CSR attributes; retry");
	else
		reply_base64(req, "application/csrattrs", der, (size_t)len);
	OPENSSL_free(der);
	sk_ASN1_TYPE_pop_free(sk, ASN1_TYPE_free);
}

/* Between requests: take the newest validated policy, as a ZeroMQ worker
 * does (server.c). */
static void refresh_policy(struct est_thread *t)
{
	char err[1024] = "";
	uint64_t gen;
	struct policy_reload *pr = t->e->pr;

	if (pr == NULL || policy_reload_generation(pr) == t->policy_gen)
		return;
	struct policy *p = policy_reload_compile(pr, &gen, err, sizeof err);
	t->policy_gen = gen;
	if (p == NULL) {
		fg_err("est", NULL, "EST thread %d keeps its previous policy: cannot compile generation %llu: %s",
		       t->index, (unsigned long long)gen, err);
		return;
	}
	worker_set_policy(t->w, p);
}

/* The enrollment core's answer (an Envelope frame) as an EST response. */
static void answer(struct evhttp_request *req, const uint8_t *frame, size_t len, int reenroll)
{
	char err[256] = "", ra[16];
	Fleetgate__Envelope *env = frame ? fg_wire_unpack(frame, len, SIZE_MAX, err, sizeof err) : NULL;
	Fleetgate__Status st = FLEETGATE__STATUS__STATUS_INTERNAL;
	const char *msg = "the enrollment core gave no answer (out of memory?)";
	uint32_t retry = 10;
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);

	if (env != NULL && env->body_case == FLEETGATE__ENVELOPE__BODY_CERT_REPLY) {
		st = env->cert_reply->status;
		msg = env->cert_reply->message;
		retry = env->cert_reply->retry_after;
	} else if (env != NULL && env->body_case == FLEETGATE__ENVELOPE__BODY_ERROR) {
		st = env->error->status;
		msg = env->error->message;
	}
	switch (st) {
	case FLEETGATE__STATUS__STATUS_OK: {
		ProtobufCBinaryData *c = &env->cert_reply->cert_der;
		size_t p7len = 0;
		unsigned char *p7 = certs_only(&c->data, &c->len, 1, &p7len);
		if (p7 == NULL)
			reply_text(req, 500, "Internal Server Error",
				   "the certificate was issued but could not be packed as PKCS#7; resend the same request");
		else
			reply_base64(req, "application/pkcs7-mime; smime-type=certs-only", p7, p7len);
		free(p7);
		fg_info("est", NULL, "%s: %s", reenroll ? "simplereenroll" : "simpleenroll", msg);
		break;
	}
	case FLEETGATE__STATUS__STATUS_PENDING:
		/* RFC 7030 4.2.3: 202 and Retry-After; the client resends the
		 * same request, which finds the same job */
		snprintf(ra, sizeof ra, "%u", retry ? retry : 1);
		evhttp_add_header(hdr, "Retry-After", ra);
		reply_text(req, 202, "Accepted", "%s; resend the same request after %s s", msg, ra);
		break;
	case FLEETGATE__STATUS__STATUS_UNAUTHORIZED:
		if (!reenroll)
			evhttp_add_header(hdr, "WWW-Authenticate", "Basic realm=\"" EST_REALM "\"");
		reply_text(req, 401, "Unauthorized", "%s", msg);
		break;
	case FLEETGATE__STATUS__STATUS_DENIED:
		reply_text(req, 403, "Forbidden", "%s", msg);
		break;
	case FLEETGATE__STATUS__STATUS_BAD_REQUEST:
	case FLEETGATE__STATUS__STATUS_RESUBMIT:
		reply_text(req, 400, "Bad Request", "%s", msg);
		break;
	default:
		snprintf(ra, sizeof ra, "%u", retry ? retry : 10);
		evhttp_add_header(hdr, "Retry-After", ra);
		reply_text(req, 503, "Service Unavailable", "%s", msg);
		break;
	}
	fg_wire_free(env);
}

/* ---- serverkeygen (RFC 7030 4.4) ---- */

/* A new key like the CSR's (same curve, or RSA of at least 2048 bits). */
static EVP_PKEY *keygen_like(EVP_PKEY *pub)
{
	char group[64] = "";
	size_t gl = 0;
	switch (EVP_PKEY_get_base_id(pub)) {
	case EVP_PKEY_EC:
		if (EVP_PKEY_get_utf8_string_param(pub, "group", group, sizeof group, &gl) != 1)
			return NULL;
		return EVP_EC_gen(group);
	case EVP_PKEY_RSA: {
		int bits = EVP_PKEY_get_bits(pub);
		return EVP_RSA_gen((unsigned int)(bits < 2048 ? 2048 : bits > 4096 ? 4096 : bits));
	}
	case EVP_PKEY_ED25519:
		return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	default:
		return EVP_EC_gen("P-256");
	}
}

/* The request's subject and extensions (names) in a CSR of the new key.
 * DER in *der (OPENSSL_malloc'd), or -1. */
static int keygen_csr(X509_REQ *orig, EVP_PKEY *key, unsigned char **der, int *len)
{
	X509_REQ *n = X509_REQ_new();
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(orig);
	const EVP_MD *md = EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
	int rc = -1;

	*der = NULL;
	if (n != NULL && X509_REQ_set_version(n, 0) == 1 &&
	    X509_REQ_set_subject_name(n, X509_REQ_get_subject_name(orig)) == 1 &&
	    (exts == NULL || sk_X509_EXTENSION_num(exts) == 0 || X509_REQ_add_extensions(n, exts) == 1) &&
	    X509_REQ_set_pubkey(n, key) == 1 && X509_REQ_sign(n, key, md) > 0 &&
	    (*len = i2d_X509_REQ(n, der)) > 0)
		rc = 0;
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(n);
	return rc;
}

/* The enrollment core's answer to a serverkeygen: on success
 * multipart/mixed (RFC 7030 4.4.2) with the new key as application/pkcs8
 * (unprotected but for TLS) and the certificate as certs-only; the key
 * exists only in this request's memory and is wiped. Anything else is
 * answered as an enrollment would be, except pending: the key would be
 * gone by the time the CA issues. */
static void answer_keygen(struct evhttp_request *req, const uint8_t *frame, size_t len, EVP_PKEY *key)
{
	char err[256] = "", boundary[48], ctype[96];
	unsigned char rnd[12], *p8 = NULL, *p7 = NULL;
	size_t p7len = 0;
	int p8len = -1;
	Fleetgate__Envelope *env = frame ? fg_wire_unpack(frame, len, SIZE_MAX, err, sizeof err) : NULL;
	struct evbuffer *b = NULL;

	if (env == NULL || env->body_case != FLEETGATE__ENVELOPE__BODY_CERT_REPLY ||
	    env->cert_reply->status != FLEETGATE__STATUS__STATUS_OK) {
		if (env != NULL && env->body_case == FLEETGATE__ENVELOPE__BODY_CERT_REPLY &&
		    env->cert_reply->status == FLEETGATE__STATUS__STATUS_PENDING)
			reply_text(req, 501, "Not Implemented",
				   "the CA behind this label holds requests for approval (%s); serverkeygen needs a CA that issues at once, because the generated key is not kept",
				   env->cert_reply->message);
		else
			answer(req, frame, len, 0);
		fg_wire_free(env);
		return;
	}
	PKCS8_PRIV_KEY_INFO *pki = EVP_PKEY2PKCS8(key);
	if (pki != NULL)
		p8len = i2d_PKCS8_PRIV_KEY_INFO(pki, &p8);
	PKCS8_PRIV_KEY_INFO_free(pki);
	ProtobufCBinaryData *c = &env->cert_reply->cert_der;
	p7 = certs_only(&c->data, &c->len, 1, &p7len);
	if (p8len <= 0 || p7 == NULL || RAND_bytes(rnd, sizeof rnd) != 1 || (b = evbuffer_new()) == NULL) {
		ERR_clear_error();
		reply_text(req, 500, "Internal Server Error", "cannot pack the generated key and certificate; send a new request");
		goto out;
	}
	char hex[2 * sizeof rnd + 1];
	fg_hex(rnd, sizeof rnd, hex);
	snprintf(boundary, sizeof boundary, "fleetgate-%s", hex);
	snprintf(ctype, sizeof ctype, "multipart/mixed; boundary=%s", boundary);
	if (evbuffer_add_printf(b, "--%s\r\nContent-Type: application/pkcs8\r\nContent-Transfer-Encoding: base64\r\n\r\n", boundary) < 0 ||
	    add_base64(b, p8, (size_t)p8len) != 0 ||
	    evbuffer_add_printf(b, "\r\n--%s\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\nContent-Transfer-Encoding: base64\r\n\r\n", boundary) < 0 ||
	    add_base64(b, p7, p7len) != 0 || evbuffer_add_printf(b, "\r\n--%s--\r\n", boundary) < 0) {
		reply_text(req, 500, "Internal Server Error", "out of memory packing the answer; send a new request");
		goto out;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
	evhttp_send_reply(req, 200, "OK", b);
	fg_info("est", NULL, "serverkeygen: %s", env->cert_reply->message);
out:
	if (b != NULL)
		evbuffer_free(b);
	if (p8 != NULL) {
		OPENSSL_cleanse(p8, (size_t)p8len);
		OPENSSL_free(p8);
	}
	free(p7);
	fg_wire_free(env);
}

static void on_enroll(struct est_thread *t, struct evhttp_request *req, const char *label,
		      const char *profile, int reenroll)
{
	struct est *e = t->e;
	/* reenroll: 0 simpleenroll, 1 simplereenroll, 2 serverkeygen (a
	 * simpleenroll whose key the gateway makes) */
	int keygen = reenroll == 2;
	if (keygen)
		reenroll = 0;
	const char *op = keygen ? "serverkeygen" : reenroll ? "simplereenroll" : "simpleenroll";
	EVP_PKEY *newkey = NULL;
	unsigned char *newder = NULL;
	const char *ctype = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t blen = evbuffer_get_length(in), derlen = 0, csrlen;
	unsigned char *der = NULL, hash[32];
	char token[256] = "", chal[256], tu[128], why[512] = "", err[512] = "";
	char key[41], rid[65], hex[65], slot[64];
	X509_REQ *csr = NULL;
	X509 *peer = NULL;
	unsigned char *peer_der = NULL;
	int peer_len = 0;
	uint8_t *frame = NULL;
	size_t flen = 0;
	struct store_cert rec;
	struct store_device dev;
	SSL *ssl = request_ssl(req);

	memset(&rec, 0, sizeof rec);
	memset(&dev, 0, sizeof dev);
	if (ssl == NULL) {
		reply_text(req, 500, "Internal Server Error", "no TLS session on this request; tell the operator");
		goto out;
	}
	/* RFC 7030 4.2.1: application/pkcs10, base64 */
	if (ctype == NULL || strncasecmp(ctype, "application/pkcs10", 18) != 0 ||
	    (ctype[18] != '\0' && ctype[18] != ';' && ctype[18] != ' ')) {
		reply_text(req, 415, "Unsupported Media Type",
			   "%s takes a base64 PKCS#10 CSR as Content-Type: application/pkcs10, not '%s'",
			   op, ctype ? ctype : "(none)");
		goto out;
	}
	const char *body = (const char *)evbuffer_pullup(in, -1);
	der = blen && body ? unbase64(body, blen, &derlen) : NULL;
	if (der == NULL) {
		reply_text(req, 400, "Bad Request",
			   "the body is not base64 (RFC 7030 4.2.1 / RFC 8951: the DER CSR, base64-encoded); encode it with e.g. openssl base64");
		goto out;
	}
	const unsigned char *q = der;
	csr = d2i_X509_REQ(NULL, &q, (long)derlen);
	if (csr == NULL || q != der + derlen) {
		ERR_clear_error();
		reply_text(req, 400, "Bad Request",
			   "the body is base64 but not one DER PKCS#10 CSR; send the output of openssl req -outform DER, base64-encoded");
		goto out;
	}
	csrlen = derlen;

	/* RFC 7030 3.5: a CSR carrying a challengePassword binds itself to
	 * this TLS session with tls-unique */
	int hc = csr_challenge(csr, chal, sizeof chal);
	if (hc < 0) {
		reply_text(req, 400, "Bad Request", "the CSR's challengePassword attribute is unreadable; rebuild the CSR");
		goto out;
	}
	if (hc == 1) {
		if (tls_unique_b64(ssl, tu, sizeof tu) != 0) {
			reply_text(req, 400, "Bad Request",
				   "the CSR carries a challengePassword (RFC 7030 3.5 tls-unique binding), but this connection is %s, which has no tls-unique (RFC 8446, RFC 9266); connect with TLS 1.2 or leave the challengePassword out",
				   SSL_get_version(ssl));
			OPENSSL_cleanse(chal, sizeof chal);
			goto out;
		}
		int same = strcmp(chal, tu) == 0;
		OPENSSL_cleanse(chal, sizeof chal);
		if (!same) {
			reply_text(req, 400, "Bad Request",
				   "the CSR's challengePassword is not this TLS session's tls-unique value (base64); the CSR must be made on the connection that sends it (RFC 7030 3.5)");
			goto out;
		}
	}

	SHA256(der, derlen, hash);
	fg_hex(hash, sizeof hash, hex);
	snprintf(rid, sizeof rid, "est-%.60s", hex);
	fg_strlcpy(slot, label[0] ? label : EST_DEFAULT_SLOT, sizeof slot);
	struct enroll_req r = {
		.protocol = "est",
		.key = key,
		.request_id = rid,
		.slot = slot,
		.csr = der,
		.csr_len = csrlen,
		.profile = label[0] ? profile : NULL,   /* req.profile: nil without label */
	};

	/* RFC 7030 3.7: a registration authority (another gateway, say)
	 * re-enrolls for its end entities with its own credential, not with
	 * their certificates, whose keys it does not hold. A simplereenroll
	 * without a client certificate but with an enrollment token in HTTP
	 * Basic is taken as such: admitted by the token like a simpleenroll. */
	int by_token = !reenroll;
	if (reenroll) {
		peer = SSL_get1_peer_certificate(ssl);
		if (peer == NULL && basic_password(req, token, sizeof token) == 1) {
			by_token = 1;
			fg_info("est", rid, "simplereenroll from a registration authority (HTTP Basic token, no client certificate)");
		}
	}
	if (by_token) {
		int b = basic_password(req, token, sizeof token);
		if (b <= 0) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
					  "Basic realm=\"" EST_REALM "\"");
			reply_text(req, 401, "Unauthorized",
				   b < 0 ? "the Authorization header is not valid HTTP Basic; send user:TOKEN, base64-encoded"
					 : "simpleenroll needs an enrollment token as the HTTP Basic password (any user name); ask the operator for one (fleetgate token create)");
			goto out;
		}
		/* the device is its key pair until it holds a certificate */
		EVP_PKEY *pk = X509_REQ_get0_pubkey(csr);
		unsigned char *spki = NULL, sh[32];
		int sl = pk ? i2d_PUBKEY(pk, &spki) : -1;
		if (sl <= 0) {
			ERR_clear_error();
			reply_text(req, 400, "Bad Request", "the CSR's public key is unreadable; rebuild the CSR");
			goto out;
		}
		SHA256(spki, (size_t)sl, sh);
		OPENSSL_free(spki);
		fg_hex(sh, sizeof sh, hex);
		snprintf(key, sizeof key, "est:%.36s", hex);
		r.token = token;
		r.token_required = 1;
	} else {
		/* the TLS client certificate, verified against the gateway's
		 * CAs, names the device (its serial is in the store) */
		if (peer == NULL) {
			reply_text(req, 401, "Unauthorized",
				   "simplereenroll needs the certificate being renewed as the TLS client certificate (with its key), or a registration authority's enrollment token as the HTTP Basic password; present one, or use simpleenroll with a token");
			goto out;
		}
		long vr = SSL_get_verify_result(ssl);
		if (vr != X509_V_OK) {
			reply_text(req, 401, "Unauthorized",
				   "the TLS client certificate does not verify against this gateway's CAs (%s); present a certificate this gateway issued",
				   X509_verify_cert_error_string(vr));
			goto out;
		}
		if (reenroll_subject_check(csr, peer, why, sizeof why) != 0) {
			reply_text(req, 400, "Bad Request", "%s", why);
			goto out;
		}
		struct fg_cert_info ci;
		if (fg_cert_info(peer, &ci, err, sizeof err) != 0) {
			reply_text(req, 400, "Bad Request", "the client certificate is unreadable: %s", err);
			goto out;
		}
		int g = store_cert_get(worker_store(t->w), ci.serial_hex, &rec, err, sizeof err);
		if (g < 0) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "10");
			reply_text(req, 503, "Service Unavailable", "%s; retry later", err);
			goto out;
		}
		if (g == 0 || store_device_get(worker_store(t->w), rec.device_id, &dev, err, sizeof err) != 1) {
			reply_text(req, 401, "Unauthorized",
				   "certificate serial %s is not one this gateway issued to a known device; enroll with simpleenroll and a token",
				   ci.serial_hex);
			goto out;
		}
		fg_strlcpy(key, dev.curve_key, sizeof key);
		/* without a label, a certificate issued under one is renewed
		 * under it (its slot and profile) */
		const struct config_est_label *was = label[0] ? NULL : config_est_label(e->cfg, rec.slot);
		if (was != NULL) {
			fg_strlcpy(slot, was->name, sizeof slot);
			r.profile = was->profile;
		}
		peer_len = i2d_X509(peer, &peer_der);
		if (peer_len <= 0) {
			reply_text(req, 500, "Internal Server Error", "out of memory; retry");
			goto out;
		}
		r.renew = 1;
		r.cur_cert = peer_der;
		r.cur_cert_len = (size_t)peer_len;
		r.pop_by_tls = 1;
	}

	if (keygen) {
		/* a new key, the request's names in a CSR of it, and a request
		 * id of its own: a retry is a new request, since the key is
		 * never kept */
		int nl = 0;
		unsigned char rnd[30];
		if ((newkey = keygen_like(X509_REQ_get0_pubkey(csr))) == NULL ||
		    keygen_csr(csr, newkey, &newder, &nl) != 0 || RAND_bytes(rnd, sizeof rnd) != 1) {
			ERR_clear_error();
			reply_text(req, 500, "Internal Server Error", "cannot generate the key; retry");
			goto out;
		}
		fg_hex(rnd, sizeof rnd, hex);
		snprintf(rid, sizeof rid, "skg-%.60s", hex);
		r.csr = newder;
		r.csr_len = (size_t)nl;
	}
	refresh_policy(t);
	worker_enroll(t->w, &r, &frame, &flen);
	if (keygen)
		answer_keygen(req, frame, flen, newkey);
	else
		answer(req, frame, flen, reenroll);
out:
	EVP_PKEY_free(newkey);
	OPENSSL_free(newder);
	OPENSSL_cleanse(token, sizeof token);
	free(frame);
	free(der);
	X509_REQ_free(csr);
	X509_free(peer);
	OPENSSL_free(peer_der);
	store_cert_clear(&rec);
	store_device_clear(&dev);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct est_thread *t = arg;
	struct est *e = t->e;
	const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
	const char *path = u ? evhttp_uri_get_path(u) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	char label[64];
	enum est_op op = OP_MAX;

	if (e->dash != NULL && path != NULL && dashboard_handle(e->dash, worker_store(t->w), req, path))
		return;
	int pr = path ? parse_path(path, label, sizeof label, &op) : -1;
	if (pr == -1) {
		reply_text(req, 404, "Not Found", "no such resource; EST lives under " EST_PREFIX " (docs/est.md)");
		return;
	}
	if (pr == -2) {
		reply_text(req, 404, "Not Found",
			   "unknown EST operation; this gateway serves cacerts, csrattrs, simpleenroll, simplereenroll and serverkeygen (fullcmc is not offered)");
		return;
	}
	const char *profile = label_profile(e, label);
	if (profile == NULL) {
		reply_text(req, 404, "Not Found",
			   "no EST label '%s' is configured; use one of est.labels in fleetgated.conf, or none", label);
		return;
	}
	int want_post = op == OP_ENROLL || op == OP_REENROLL || op == OP_SERVERKEYGEN;
	if (want_post ? cmd != EVHTTP_REQ_POST : cmd != EVHTTP_REQ_GET) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", want_post ? "POST" : "GET");
		reply_text(req, 405, "Method Not Allowed", "this EST operation takes %s",
			   want_post ? "POST" : "GET");
		return;
	}
	switch (op) {
	case OP_CACERTS: on_cacerts(e, req, profile); break;
	case OP_CSRATTRS: on_csrattrs(req); break;
	case OP_ENROLL: on_enroll(t, req, label, profile, 0); break;
	case OP_REENROLL: on_enroll(t, req, label, profile, 1); break;
	case OP_SERVERKEYGEN: on_enroll(t, req, label, profile, 2); break;
	default: break;
	}
}

/* ---- TLS ---- */

/* Client certificates are asked for, never required; the verdict is read in
 * the request (SSL_get_verify_result), so that a device with a foreign
 * certificate gets a readable 401 rather than a failed handshake. */
static int verify_any(int ok, X509_STORE_CTX *ctx)
{
	(void)ok;
	(void)ctx;
	return 1;
}

static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
	struct est_thread *t = arg;
	SSL *ssl = SSL_new(t->e->ssl);
	if (ssl == NULL)
		return NULL;
	return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
					      BEV_OPT_CLOSE_ON_FREE | BEV_OPT_THREADSAFE);
}

/* Drain the OpenSSL error queue into err after what. */
static void ssl_err(char *err, size_t errlen, const char *what)
{
	char e[256] = "no detail";
	unsigned long code = ERR_peek_last_error();
	if (code)
		ERR_error_string_n(code, e, sizeof e);
	ERR_clear_error();
	fg_seterr(err, errlen, "%s: %s", what, e);
}

static int tls_setup(struct est *e, char *err, size_t errlen)
{
	const struct gw_config *cfg = e->cfg;
	char what[PATH_MAX + 128];

	e->ssl = SSL_CTX_new(TLS_server_method());
	if (e->ssl == NULL || !SSL_CTX_set_min_proto_version(e->ssl, TLS1_2_VERSION)) {
		ssl_err(err, errlen, "cannot set up TLS for EST");
		return -1;
	}
	SSL_CTX_set_options(e->ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* with client certificates asked for, a resumed session needs a
	 * session id context, or OpenSSL fails the handshake */
	static const unsigned char sid_ctx[] = "fleetgate-est";
	SSL_CTX_set_session_id_context(e->ssl, sid_ctx, sizeof sid_ctx - 1);
	if (SSL_CTX_use_certificate_chain_file(e->ssl, cfg->est_cert) != 1) {
		snprintf(what, sizeof what, "cannot load the EST TLS certificate %s (est.cert; fleetgate init --est makes one)",
			 cfg->est_cert);
		ssl_err(err, errlen, what);
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(e->ssl, cfg->est_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(e->ssl) != 1) {
		snprintf(what, sizeof what, "cannot load the EST TLS key %s (est.key), or it does not match est.cert",
			 cfg->est_key);
		ssl_err(err, errlen, what);
		return -1;
	}
	/* the anchors for client certificates: every backend's CAs */
	X509_STORE *xs = SSL_CTX_get_cert_store(e->ssl);
	STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
	for (size_t i = 0; i < cfg->nbackends; i++) {
		struct backend *b = backends_find(e->bs, cfg->backends[i].name);
		struct fg_cert_list cl;
		char e2[256];
		memset(&cl, 0, sizeof cl);
		if (b == NULL || b->ops->cacerts == NULL || b->ops->cacerts(b->state, &cl, e2, sizeof e2) != 0) {
			fg_warn("est", NULL, "backend %s gives no CA certificates: its certificates cannot authenticate simplereenroll",
				cfg->backends[i].name);
			continue;
		}
		for (size_t j = 0; j < cl.n; j++) {
			const unsigned char *p = cl.der[j];
			X509 *x = d2i_X509(NULL, &p, (long)cl.len[j]);
			if (x != NULL) {
				X509_STORE_add_cert(xs, x);
				if (names != NULL)
					sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(x)));
			}
			X509_free(x);
		}
		fg_cert_list_clear(&cl);
	}
	ERR_clear_error();   /* a CA listed twice */
	if (names != NULL)
		SSL_CTX_set_client_CA_list(e->ssl, names);
	SSL_CTX_set_verify(e->ssl, SSL_VERIFY_PEER, verify_any);
	/* a certificate renews itself whatever its extended key usage (a
	 * router's serverAuth certificate too): the store says whose it is */
	SSL_CTX_set_purpose(e->ssl, X509_PURPOSE_ANY);
	return 0;
}

static void *est_main(void *arg)
{
	struct est_thread *t = arg;
	event_base_dispatch(t->base);
	return NULL;
}

/* Thread i's worker, event loop and evhttp, with the EST settings. */
static int thread_setup(struct est *e, int i, char *err, size_t errlen)
{
	struct est_thread *t = &e->t[i];

	t->e = e;
	t->index = i;
	t->policy_gen = e->pr ? policy_reload_generation(e->pr) : 0;
	if ((t->w = worker_new(e->cfg, e->bs, -1 - i, err, errlen)) == NULL)
		return -1;
	if ((t->base = event_base_new()) == NULL || (t->http = evhttp_new(t->base)) == NULL) {
		fg_seterr(err, errlen, "cannot set up the EST server (libevent): out of memory?");
		return -1;
	}
	evhttp_set_bevcb(t->http, make_bev, t);
	evhttp_set_max_body_size(t->http, EST_MAX_BODY);
	evhttp_set_max_headers_size(t->http, EST_MAX_HEADERS);
	evhttp_set_timeout(t->http, EST_TIMEOUT);
	evhttp_set_allowed_methods(t->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	evhttp_set_gencb(t->http, on_request, t);
	return 0;
}

/*
 * As many EST threads as the gateway has workers, all accepting on one
 * listening socket (each event loop has its own copy of the descriptor;
 * the kernel hands each connection to one of them). A thread runs an
 * enrollment to its end, backend call included, so several threads keep a
 * slow upstream CA from holding up every EST client.
 */
struct est *est_start(const struct gw_config *cfg, struct backends *bs, struct policy_reload *pr,
		      char *err, size_t errlen)
{
	struct est *e = NULL;
	char host[256];
	int port;
	sigset_t all, old;

	if (config_http_split(cfg->est_listen, host, sizeof host, &port) != 0) {
		fg_seterr(err, errlen, "est.listen '%s' is not HOST:PORT; fix fleetgated.conf", cfg->est_listen);
		return NULL;
	}
	if (evthread_use_pthreads() != 0) {
		fg_seterr(err, errlen, "libevent has no pthreads support; install libevent-pthreads");
		return NULL;
	}
	if ((e = calloc(1, sizeof *e)) == NULL ||
	    (e->t = calloc((size_t)(cfg->workers > 0 ? cfg->workers : 1), sizeof *e->t)) == NULL) {
		free(e);
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	e->cfg = cfg;
	e->bs = bs;
	e->pr = pr;
	e->nthreads = cfg->workers > 0 ? cfg->workers : 1;
	if (cfg->ui_enabled && (e->dash = dashboard_new(cfg, bs)) == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	if (tls_setup(e, err, errlen) != 0)
		goto fail;
	for (int i = 0; i < e->nthreads; i++)
		if (thread_setup(e, i, err, errlen) != 0)
			goto fail;
	struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(e->t[0].http, host, (ev_uint16_t)port);
	if (bound == NULL) {
		fg_seterr(err, errlen, "cannot listen for EST on %s: %s; change est.listen in fleetgated.conf or stop what uses the port",
			  cfg->est_listen, strerror(errno));
		goto fail;
	}
	int lfd = evhttp_bound_socket_get_fd(bound);
	/* Accepted sockets inherit TCP_NODELAY on Linux. Without it an answer
	 * written as several TLS records waits for the client's delayed ACK
	 * (Nagle): 40 ms per request. */
	int one = 1;
	if (setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
		fg_warn("est", NULL, "cannot set TCP_NODELAY on the EST socket: %s", strerror(errno));
	for (int i = 1; i < e->nthreads; i++) {
		int fd = fcntl(lfd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0 || evhttp_accept_socket_with_handle(e->t[i].http, fd) == NULL) {
			fg_seterr(err, errlen, "cannot share the EST socket with thread %d: %s", i, strerror(errno));
			if (fd >= 0)
				close(fd);
			goto fail;
		}
	}
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (int i = 0; i < e->nthreads; i++) {
		int r = pthread_create(&e->t[i].thread, NULL, est_main, &e->t[i]);
		if (r != 0) {
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			fg_seterr(err, errlen, "cannot start EST thread %d: %s", i, strerror(r));
			goto fail;
		}
		e->t[i].started = 1;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	fg_info("est", NULL, "EST on https://%s" EST_PREFIX " (%zu labels, %d threads)%s", cfg->est_listen,
		cfg->nest_labels, e->nthreads, e->dash ? "; the dashboard at /ui/" : "");
	return e;
fail:
	est_stop(e);
	return NULL;
}

void est_stop(struct est *e)
{
	if (e == NULL)
		return;
	for (int i = 0; i < e->nthreads; i++)
		if (e->t[i].started)
			event_base_loopexit(e->t[i].base, NULL);
	for (int i = 0; i < e->nthreads; i++) {
		struct est_thread *t = &e->t[i];
		if (t->started)
			pthread_join(t->thread, NULL);
		if (t->http)
			evhttp_free(t->http);
		if (t->base)
			event_base_free(t->base);
		worker_free(t->w);
	}
	SSL_CTX_free(e->ssl);
	dashboard_free(e->dash);
	free(e->t);
	free(e);
}
