/*
 * fuzz_est: EST bodies, both sides. The front-end (gateway/est.c, compiled
 * in here): the request path, an "Authorization: Basic" value, and a
 * simpleenroll body (base64 of one DER PKCS#10) with what on_enroll reads
 * of the CSR (challengePassword, subjectAltName, the re-enrollment subject
 * check against a certificate of the same CSR's names). The backend
 * (plugins/est, fuzz_est_backend.c) reads the same input as a server's
 * answer. The first line of the input is the path, header or Content-Type
 * each reader takes; the rest is the body.
 */
#include <stddef.h>
#include <stdint.h>

#include "../../gateway/est.c"
#include "fuzz_est.h"

/* What the front-end reads of a request: path, Basic credentials, CSR. */
static void front(const char *line, const char *body, size_t blen)
{
	char label[64], why[512];
	enum est_op op;
	parse_path(line, label, sizeof label, &op);

	/* basic_password without the evhttp request: its base64 and split */
	size_t n = 0;
	unsigned char *dec = unbase64(line, strlen(line), &n);
	if (dec != NULL) {
		(void)memchr(dec, ':', n);
		free(dec);
	}

	size_t derlen = 0;
	unsigned char *der = blen ? unbase64(body, blen, &derlen) : NULL;
	if (der == NULL)
		return;
	const unsigned char *q = der;
	X509_REQ *csr = d2i_X509_REQ(NULL, &q, (long)derlen);
	if (csr != NULL && q == der + derlen) {
		char chal[256];
		csr_challenge(csr, chal, sizeof chal);
		GENERAL_NAMES *san = csr_san(csr);
		same_names(san, san);
		/* a certificate with the CSR's subject and names, as the
		 * client certificate of a re-enrollment */
		X509 *cur = X509_new();
		if (cur != NULL && X509_set_subject_name(cur, X509_REQ_get_subject_name(csr)) &&
		    (san == NULL || X509_add1_ext_i2d(cur, NID_subject_alt_name, san, 0, 0) == 1))
			reenroll_subject_check(csr, cur, why, sizeof why);
		ERR_clear_error();
		X509_free(cur);
		GENERAL_NAMES_free(san);
	}
	ERR_clear_error();
	X509_REQ_free(csr);
	free(der);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fg_log_init("fuzz_est", FG_LOG_ERROR, FG_LOG_TEXT);
	return fuzz_est_backend_init();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t ll = nl ? (size_t)(nl - data) : size;
	char line[512];
	if (ll >= sizeof line)
		ll = sizeof line - 1;
	memcpy(line, data, ll);
	line[ll] = '\0';
	const uint8_t *body = nl ? nl + 1 : data + size;
	size_t blen = (size_t)(data + size - body);

	front(line, (const char *)body, blen);
	fuzz_est_backend(line, body, blen);
	return 0;
}
