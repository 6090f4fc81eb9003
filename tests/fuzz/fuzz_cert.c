/*
 * fuzz_cert: what the agent does with the certificate and chain a gateway
 * returns: DER to X509, the facts it reads (serial, names, validity), and
 * a PEM chain parsed into certificates.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "fg_x509.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	X509 *x = fg_cert_from_der(data, size, err, sizeof err);
	if (x != NULL) {
		struct fg_cert_info info;
		fg_cert_info(x, &info, err, sizeof err);
		X509_free(x);
	}
	STACK_OF(X509) *chain = fg_certs_from_pem((const char *)data, size, err, sizeof err);
	if (chain != NULL)
		sk_X509_pop_free(chain, X509_free);
	return 0;
}
