/*
 * fuzz_acme: the ACME backend (plugins/acme, compiled in) against a CA whose
 * every answer comes from the input: the directory, newNonce, newAccount,
 * the order, its authorizations and challenges, finalize, the certificate
 * chain (PEM) and ARI renewalInfo, with problem documents (RFC 7807) and
 * Replay-Nonce, Location and Retry-After headers wherever the CA sends
 * them. libcurl's easy interface is replaced here (the executable's
 * definitions come first): curl_easy_perform hands the plugin the next
 * answer of the input. The account key is made once; everything else of
 * the plugin's and the job's state starts afresh for each input.
 *
 * Input: a first byte choosing the challenge mode (even: http-01 answered
 * by the gateway, odd: by the agent), then answers separated by a line
 * "--": each "STATUS" on its first line, header lines, an empty line and
 * the body.
 */
#include <stddef.h>
#include <stdint.h>

#include "../../plugins/acme/acme.c"

/* ---- the CA's answers ---- */

static const uint8_t *in_p, *in_end;

struct mock {
	size_t (*write)(char *, size_t, size_t, void *);
	void *write_data;
	size_t (*header)(char *, size_t, size_t, void *);
	void *header_data;
	long code;
	char ctype[128];
};

static const uint8_t *find_sep(const uint8_t *p, const uint8_t *end)
{
	for (; p + 4 <= end; p++)
		if (p[0] == '\n' && p[1] == '-' && p[2] == '-' && p[3] == '\n')
			return p;
	return end;
}

CURL *(curl_easy_init)(void)
{
	return calloc(1, sizeof(struct mock));
}

void (curl_easy_cleanup)(CURL *c)
{
	free(c);
}

CURLcode (curl_easy_setopt)(CURL *c, CURLoption opt, ...)
{
	struct mock *m = (struct mock *)c;
	va_list ap;
	va_start(ap, opt);
	switch (opt) {
	case CURLOPT_WRITEFUNCTION:
		m->write = va_arg(ap, size_t (*)(char *, size_t, size_t, void *));
		break;
	case CURLOPT_WRITEDATA:
		m->write_data = va_arg(ap, void *);
		break;
	case CURLOPT_HEADERFUNCTION:
		m->header = va_arg(ap, size_t (*)(char *, size_t, size_t, void *));
		break;
	case CURLOPT_HEADERDATA:
		m->header_data = va_arg(ap, void *);
		break;
	default:
		break;
	}
	va_end(ap);
	return CURLE_OK;
}

CURLcode (curl_easy_perform)(CURL *c)
{
	struct mock *m = (struct mock *)c;
	if (in_p >= in_end)
		return CURLE_COULDNT_CONNECT;
	const uint8_t *end = find_sep(in_p, in_end), *p = in_p;
	in_p = end + 4 <= in_end ? end + 4 : in_end;
	char line[1024];
	int first = 1;
	m->code = 200;
	m->ctype[0] = 0;
	while (p < end) {                       /* status and header lines */
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((nl ? nl : end) - p);
		if (n > sizeof line - 3)
			n = sizeof line - 3;
		memcpy(line, p, n);
		line[n] = 0;
		p = nl ? nl + 1 : end;
		if (n > 0 && line[n - 1] == '\r')
			line[--n] = 0;
		if (first) {
			first = 0;
			m->code = strtol(line, NULL, 10);
			continue;
		}
		if (n == 0)
			break;
		if (strncasecmp(line, "Content-Type:", 13) == 0)
			snprintf(m->ctype, sizeof m->ctype, "%s", line + 13 + strspn(line + 13, " "));
		if (m->header != NULL) {
			memcpy(line + n, "\r\n", 3);  /* as libcurl passes it: with the CRLF */
			if (m->header(line, 1, n + 2, m->header_data) != n + 2)
				return CURLE_WRITE_ERROR;
		}
	}
	if (p < end && m->write != NULL &&
	    m->write((char *)p, 1, (size_t)(end - p), m->write_data) != (size_t)(end - p))
		return CURLE_WRITE_ERROR;
	return CURLE_OK;
}

CURLcode (curl_easy_getinfo)(CURL *c, CURLINFO info, ...)
{
	struct mock *m = (struct mock *)c;
	va_list ap;
	va_start(ap, info);
	if (info == CURLINFO_RESPONSE_CODE)
		*va_arg(ap, long *) = m->code;
	else if (info == CURLINFO_CONTENT_TYPE)
		*va_arg(ap, char **) = m->ctype[0] ? m->ctype : NULL;
	va_end(ap);
	return CURLE_OK;
}

/* ---- the host ---- */

#define KV_MAX 16
struct kv {
	char key[64];
	unsigned char *val;
	size_t len;
};
static struct kv plugin_state[KV_MAX], job_state[KV_MAX];

static int kv_get(struct kv *t, const char *key, unsigned char **val, size_t *len)
{
	for (int i = 0; i < KV_MAX; i++)
		if (t[i].val != NULL && strcmp(t[i].key, key) == 0) {
			*val = malloc(t[i].len + 1);
			if (*val == NULL)
				return -1;
			memcpy(*val, t[i].val, t[i].len);
			(*val)[t[i].len] = 0;
			*len = t[i].len;
			return 1;
		}
	return 0;
}

static int kv_put(struct kv *t, const char *key, const unsigned char *val, size_t len)
{
	int free_slot = -1;
	for (int i = 0; i < KV_MAX; i++) {
		if (t[i].val != NULL && strcmp(t[i].key, key) == 0) {
			free(t[i].val);
			t[i].val = NULL;
		}
		if (t[i].val == NULL && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0 || strlen(key) >= sizeof t[0].key)
		return -1;
	t[free_slot].val = malloc(len + 1);
	if (t[free_slot].val == NULL)
		return -1;
	memcpy(t[free_slot].val, val, len);
	t[free_slot].len = len;
	snprintf(t[free_slot].key, sizeof t[free_slot].key, "%s", key);
	return 0;
}

static void kv_clear(struct kv *t, const char *keep)
{
	for (int i = 0; i < KV_MAX; i++)
		if (t[i].val != NULL && (keep == NULL || strcmp(t[i].key, keep) != 0)) {
			free(t[i].val);
			t[i].val = NULL;
		}
}

static void h_log(void *ctx, enum fg_level l, const char *rid, const char *msg)
{
	(void)ctx;
	(void)l;
	(void)rid;
	(void)msg;
}
static int64_t h_now(void *ctx)
{
	(void)ctx;
	return 1796000000;   /* a fixed clock: ARI windows and Retry-After dates */
}
static int h_random(void *ctx, void *buf, size_t len)
{
	(void)ctx;
	memset(buf, 0x5a, len);
	return 0;
}
static int h_state_get(void *ctx, const char *k, unsigned char **v, size_t *l)
{
	(void)ctx;
	return kv_get(plugin_state, k, v, l);
}
static int h_state_put(void *ctx, const char *k, const unsigned char *v, size_t l)
{
	(void)ctx;
	return kv_put(plugin_state, k, v, l);
}
static int h_job_get(struct fg_job *job, const char *k, unsigned char **v, size_t *l)
{
	(void)job;
	return kv_get(job_state, k, v, l);
}
static int h_job_put(struct fg_job *job, const char *k, const unsigned char *v, size_t l)
{
	(void)job;
	return kv_put(job_state, k, v, l);
}
static int h_publish(void *ctx, const char *token, const char *ka)
{
	(void)ctx;
	(void)token;
	(void)ka;
	return 0;
}
static void h_withdraw(void *ctx, const char *token)
{
	(void)ctx;
	(void)token;
}

static struct fg_host host = {
	.abi_version = FG_PLUGIN_ABI_VERSION, .struct_size = sizeof host,
	.log = h_log, .now = h_now, .random = h_random, .state_get = h_state_get,
	.state_put = h_state_put, .job_get = h_job_get, .job_put = h_job_put,
	.http01_publish = h_publish, .http01_withdraw = h_withdraw, .result_size = sizeof(struct fg_issue_result),
};

static struct acme *acme;
static unsigned char *csr_der;
static int csr_len;
static const char *const dns[] = { "dev1.example" };

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const struct fg_kv kv[] = {
		{ "name", "upstream" }, { "directory", "https://acme.example/dir" },
		{ "contact", "mailto:pki@example.com" }, { "inline_wait", "0" },
	};
	char err[512];
	void *st = NULL;
	if (acme_open(&host, kv, sizeof kv / sizeof kv[0], &st, err, sizeof err) != 0) {
		fprintf(stderr, "fuzz_acme: %s\n", err);
		abort();
	}
	acme = st;
	/* the device's CSR: CN and SAN dev1.example (an ACME CA certifies a CN only as one of the names) */
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509_REQ *r = X509_REQ_new();
	X509_NAME *n = X509_REQ_get_subject_name(r);
	GENERAL_NAMES *gns = GENERAL_NAMES_new();
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	if (k == NULL || r == NULL || gns == NULL || gn == NULL || ia5 == NULL || exts == NULL ||
	    !ASN1_STRING_set(ia5, "dev1.example", -1))
		abort();
	GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
	sk_GENERAL_NAME_push(gns, gn);
	X509_EXTENSION *ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gns);
	sk_X509_EXTENSION_push(exts, ext);
	if (!X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"dev1.example", -1, -1, 0) ||
	    !X509_REQ_add_extensions(r, exts) || !X509_REQ_set_pubkey(r, k) ||
	    !X509_REQ_sign(r, k, EVP_sha256()) || (csr_len = i2d_X509_REQ(r, &csr_der)) <= 0)
		abort();
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gns);
	X509_REQ_free(r);
	EVP_PKEY_free(k);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	in_p = data + 1;
	in_end = data + size;
	/* a fresh CA: no directory, account URL or spare nonce known */
	acme->have_dir = 0;
	acme->kid[0] = 0;
	acme->nonce[0] = 0;
	kv_clear(plugin_state, "account.key");
	kv_clear(job_state, NULL);

	static char *const ready[] = { "tok-dev1" };
	struct fg_issue_request req = {
		.struct_size = sizeof req, .request_id = "fuzz-acme", .device_id = "dev_fuzz",
		.slot = "default", .csr_der = csr_der, .csr_len = (size_t)csr_len,
		.subject_cn = "dev1.example", .dns_names = dns, .n_dns = 1, .profile = "default",
		.acme_challenge = data[0] & 1 ? "http-01-agent" : "http-01-gateway",
		.challenges_ready = (const char *const *)ready, .n_challenges_ready = data[0] & 2 ? 1 : 0,
	};
	struct fg_issue_result res;
	run_job(acme, &req, &res);
	fg_issue_result_clear(&res);
	ERR_clear_error();
	return 0;
}
