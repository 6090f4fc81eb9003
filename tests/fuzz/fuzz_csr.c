/*
 * fuzz_csr: fg_csr_check, the gateway's first look at a device's CSR (DER
 * decode, self-signature, key type and strength, names).
 */
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "fg_x509.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fg_csr_info info;
	EVP_PKEY *pub = NULL;
	char err[512];
	if (fg_csr_check(data, size, &info, &pub, err, sizeof err) == 0) {
		fg_csr_info_clear(&info);
		EVP_PKEY_free(pub);
	}
	return 0;
}
