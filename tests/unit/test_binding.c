/*
 * Unit tests for gateway/binding.c: the attributes a token is bound to
 * (token create --bind) against the facts a device reports; a mismatch is
 * named, and what cannot be checked fails closed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "binding.h"

static void test_valid(void **state)
{
	char err[256];
	(void)state;
	assert_int_equal(binding_valid("serial", "ABC", err, sizeof err), 0);
	assert_int_equal(binding_valid("tpm", "yes", err, sizeof err), 0);
	assert_int_equal(binding_valid("tpm", "maybe", err, sizeof err), -1);
	assert_non_null(strstr(err, "yes or no"));
	assert_int_equal(binding_valid("colour", "red", err, sizeof err), -1);
	assert_non_null(strstr(err, "known are serial"));
	assert_int_equal(binding_valid("serial", "", err, sizeof err), -1);
}

static void test_check(void **state)
{
	char err[512];
	struct policy_facts f;
	(void)state;
	memset(&f, 0, sizeof f);
	f.secure_boot = -1;
	f.dmi_product_serial = "SN-1";
	f.hostname = "Web1";
	f.tpm_present = 0;
	assert_int_equal(binding_check(NULL, &f, err, sizeof err), 0);
	assert_int_equal(binding_check("{}", &f, err, sizeof err), 0);
	assert_int_equal(binding_check("{\"serial\":\"SN-1\",\"hostname\":\"web1\"}", &f, err, sizeof err), 0);
	assert_int_equal(binding_check("{\"serial\":\"SN-2\"}", &f, err, sizeof err), -1);
	assert_non_null(strstr(err, "bound to serial (DMI product_serial) 'SN-2' but this device reports 'SN-1'"));
	assert_int_equal(binding_check("{\"tpm\":\"yes\"}", &f, err, sizeof err), -1);
	assert_non_null(strstr(err, "tpm=yes"));
	f.tpm_present = 1;
	assert_int_equal(binding_check("{\"tpm\":\"yes\"}", &f, err, sizeof err), 0);
	assert_int_equal(binding_check("{\"tpm\":\"no\"}", &f, err, sizeof err), -1);
	/* unknown secure boot matches neither yes nor no */
	assert_int_equal(binding_check("{\"secure_boot\":\"no\"}", &f, err, sizeof err), -1);
	f.dmi_product_serial = NULL;
	assert_int_equal(binding_check("{\"serial\":\"SN-1\"}", &f, err, sizeof err), -1);
	assert_non_null(strstr(err, "reports none"));
	/* what cannot be checked is refused */
	assert_int_equal(binding_check("{\"colour\":\"red\"}", &f, err, sizeof err), -1);
	assert_int_equal(binding_check("{\"serial\":1}", &f, err, sizeof err), -1);
	assert_int_equal(binding_check("not json", &f, err, sizeof err), -1);
	assert_int_equal(binding_check("[]", &f, err, sizeof err), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
