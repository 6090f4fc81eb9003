/*
 * fuzz_est: the EST backend's readers of a server's answers (plugins/est,
 * compiled in): a base64 PKCS#7 certs-only body (/cacerts, /simpleenroll)
 * and the leaf it must hold for the device's key, a /csrattrs body (base64
 * CsrAttrs) and what it asks of a key, and a multipart /serverkeygen
 * answer (a PKCS#8 key and its certificate, the key then encrypted to the
 * CSR). The device's key and CSR are fixed, made in the initialisation.
 */
#include <stddef.h>
#include <stdint.h>

#include "../../plugins/est/est.c"
#include "fuzz_est.h"

/* The device key of the seeds (tests/fuzz/seeds/est/): their leaf
 * certificates certify it. */
static const char dev_key_pem[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPBZFFtg5fu0IQBZA\n"
	"G6Bl7Zm4v7myFVpMMFaaTmxfoHehRANCAAReJ8ujx3t9GjezB60XMAoZwQjk5Uwq\n"
	"3CQEr2o+g5Q+TddV1WFsSZkTpdLURLEpPREWcfqN7wEZ1Z91oyW4NG4Y\n"
	"-----END PRIVATE KEY-----\n";

static void host_log(void *ctx, enum fg_level level, const char *rid, const char *msg)
{
	(void)ctx;
	(void)level;
	(void)rid;
	(void)msg;
}

static struct fg_host host = { .log = host_log };
static struct est est = { .host = &host, .name = "upstream", .base = "https://est.example/.well-known/est" };
static struct ca_view view;
static EVP_PKEY *dev_key;
static X509_REQ *dev_csr;
static unsigned char *csr_der;
static int csr_len;
static const char *const dns[] = { "dev1.example" };
static struct fg_issue_request req = {
	.struct_size = sizeof req, .request_id = "fuzz-est", .device_id = "dev_fuzz",
	.slot = "default", .subject_cn = "dev1", .dns_names = dns, .n_dns = 1,
	.profile = "default", .server_keygen = 1,
};

int fuzz_est_backend_init(void)
{
	BIO *b = BIO_new_mem_buf(dev_key_pem, -1);
	dev_key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	dev_csr = X509_REQ_new();
	X509_NAME *n = X509_REQ_get_subject_name(dev_csr);
	if (dev_key == NULL || dev_csr == NULL ||
	    !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"dev1", -1, -1, 0) ||
	    !X509_REQ_set_pubkey(dev_csr, dev_key) || !X509_REQ_sign(dev_csr, dev_key, EVP_sha256()) ||
	    (csr_len = i2d_X509_REQ(dev_csr, &csr_der)) <= 0)
		abort();
	req.csr_der = csr_der;
	req.csr_len = (size_t)csr_len;
	view.chain = sk_X509_new_null();
	if (view.chain == NULL || pthread_mutex_init(&est.mu, NULL) != 0)
		abort();
	return 0;
}

void fuzz_est_backend(const char *ctype, const uint8_t *data, size_t n)
{
	char err[512], why[256];
	struct fg_issue_result res;
	/* as libcurl's body arrives (fgp_body_write): NUL-terminated */
	unsigned char *body = malloc(n + 1);
	if (body == NULL)
		return;
	memcpy(body, data, n);
	body[n] = 0;

	STACK_OF(X509) *certs = certs_only(&est, "simpleenroll", body, n, err, sizeof err);
	if (certs != NULL) {
		memset(&res, 0, sizeof res);
		take_certificate(&est, &view, &req, dev_key, certs, "simpleenroll", &res);
		fg_issue_result_clear(&res);
		X509 *ca = pick_ca(&est, certs, err, sizeof err);
		X509_free(ca);
		sk_X509_pop_free(certs, X509_free);
	}
	struct csr_wants w;
	if (parse_csrattrs(&est, body, n, &w, err, sizeof err) == 0) {
		key_fits(&w, dev_key, why, sizeof why);
		suggest_key_type(&w);
	}
	struct reply r;
	memset(&r, 0, sizeof r);
	r.code = 200;
	r.body.p = body;
	r.body.n = n;
	r.retry_after = -1;
	snprintf(r.ctype, sizeof r.ctype, "%s", ctype);
	memset(&res, 0, sizeof res);
	take_server_key(&est, &view, &req, dev_csr, &r, &res);
	fg_issue_result_clear(&res);
	ERR_clear_error();
	free(body);
}
