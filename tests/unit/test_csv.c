/*
 * Unit tests for gateway/csv.c (the RFC 4180 reader behind device import)
 * and the row checks of gateway/import.c: quoted fields with commas,
 * doubled quotes and line breaks, CRLF, a byte order mark, blank lines, a
 * last line without a newline, and every malformed input refused with the
 * line it is on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"
#include "import.h"

/* Parse text into "f1|f2;f1|f2;" with each record's line as "@N:", or
 * "ERR@N:message" at the first error. */
static char *render(const char *text, size_t len)
{
	static char out[4096];
	char err[256], **f;
	size_t nf, n = 0;
	long line;
	int r;
	struct csv *c = csv_new(text, len);
	assert_non_null(c);
	out[0] = '\0';
	while ((r = csv_next(c, &f, &nf, &line, err, sizeof err)) == 1) {
		n += (size_t)snprintf(out + n, sizeof out - n, "@%ld:", line);
		for (size_t i = 0; i < nf; i++)
			n += (size_t)snprintf(out + n, sizeof out - n, "%s%s", i ? "|" : "", f[i]);
		n += (size_t)snprintf(out + n, sizeof out - n, ";");
	}
	if (r < 0)
		snprintf(out + n, sizeof out - n, "ERR@%ld:%s", line, err);
	/* after the end or an error the reader stays at the end */
	assert_int_equal(csv_next(c, &f, &nf, &line, err, sizeof err), 0);
	csv_free(c);
	return out;
}

#define R(s) render(s, sizeof(s) - 1)

static int starts(const char *s, const char *prefix)
{
	if (strncmp(s, prefix, strlen(prefix)) == 0)
		return 1;
	fprintf(stderr, "got: %s\n", s);
	return 0;
}

static void test_plain(void **state)
{
	(void)state;
	assert_string_equal(R("a,b,c\n1,2,3\n"), "@1:a|b|c;@2:1|2|3;");
	assert_string_equal(R("a,b\n1,2"), "@1:a|b;@2:1|2;");          /* no final newline */
	assert_string_equal(R("a,b\r\n1,2\r\n"), "@1:a|b;@2:1|2;");    /* CRLF */
	assert_string_equal(R("a,,\n,,\n"), "@1:a||;@2:||;");          /* empty fields */
	assert_string_equal(R("a\n\n\r\nb\n"), "@1:a;@4:b;");          /* blank lines skipped */
	assert_string_equal(R("\xEF\xBB\xBFserial\nX\n"), "@1:serial;@2:X;");   /* BOM */
	assert_string_equal(R(""), "");
	assert_string_equal(R(" a , b \n"), "@1: a | b ;");            /* blanks kept (import trims) */
}

static void test_quoted(void **state)
{
	(void)state;
	assert_string_equal(R("\"a,b\",c\n"), "@1:a,b|c;");
	assert_string_equal(R("\"say \"\"hi\"\"\",x\n"), "@1:say \"hi\"|x;");
	assert_string_equal(R("\"\",x\n"), "@1:|x;");
	assert_string_equal(R("\"\"\"\"\n"), "@1:\";");
	/* a line break inside quotes belongs to the field; lines still count */
	assert_string_equal(R("\"two\nlines\",x\nnext,y\n"), "@1:two\nlines|x;@3:next|y;");
	assert_string_equal(R("\"a\"\r\n\"b\""), "@1:a;@2:b;");
	assert_string_equal(R("x,\"\"\n"), "@1:x|;");
}

static void test_malformed(void **state)
{
	(void)state;
	assert_true(starts(R("a,b\nx,\"open\ny,z\n"), "@1:a|b;ERR@2:a quoted field starts here and is never closed"));
	assert_true(starts(R("a\nb\"c\n"), "@1:a;ERR@2:a double quote inside an unquoted field"));
	assert_true(starts(R("\"a\"b\n"), "ERR@1:text after the closing quote"));
	assert_true(starts(R("\"a\" ,b\n"), "ERR@1:text after the closing quote"));
	assert_true(starts(R("a\rb\n"), "ERR@1:a carriage return not followed by a line feed"));
	assert_true(starts(render("a\nb\0c\n", 6), "@1:a;ERR@2:a NUL byte"));
	/* the error line is where the fault is, after quoted line breaks */
	assert_true(starts(R("\"1\n2\n3\"x\n"), "ERR@3:text after the closing quote"));
}

static void test_large(void **state)
{
	(void)state;
	/* many rows and wide fields: the buffers grow and are reused */
	size_t cap = 8 * 1024 * 1024, n = 0;
	char *text = malloc(cap), err[256], **f;
	assert_non_null(text);
	for (int i = 0; i < 20000; i++)
		n += (size_t)snprintf(text + n, cap - n, "SN%06d,\"%0200d, with comma\",%d\n", i, i, i);
	struct csv *c = csv_new(text, n);
	size_t nf;
	long line;
	int rows = 0;
	while (csv_next(c, &f, &nf, &line, err, sizeof err) == 1) {
		assert_int_equal(nf, 3);
		assert_int_equal(line, rows + 1);
		assert_int_equal(strlen(f[1]), 212);
		rows++;
	}
	assert_int_equal(rows, 20000);
	assert_int_equal(csv_offset(c), n);
	csv_free(c);
	free(text);
}

static void test_row_checks(void **state)
{
	(void)state;
	assert_true(import_serial_valid("SN-0001"));
	assert_true(import_serial_valid("5CD1234XYZ:2+a_b.c"));
	assert_false(import_serial_valid(""));
	assert_false(import_serial_valid("../etc"));
	assert_false(import_serial_valid("a/b"));
	assert_false(import_serial_valid("with space"));
	assert_false(import_serial_valid("-x"));
	assert_false(import_serial_valid("12345678901234567890123456789012345678901234567890123456789012345"));
	assert_true(import_hostname_valid(""));
	assert_true(import_hostname_valid("web1"));
	assert_true(import_hostname_valid("web-1.corp.example"));
	assert_false(import_hostname_valid("web_1"));
	assert_false(import_hostname_valid("-web"));
	assert_false(import_hostname_valid("web-"));
	assert_false(import_hostname_valid("a..b"));
	assert_false(import_hostname_valid("a.b."));
	assert_false(import_hostname_valid("bad host"));
	assert_true(import_name_valid("laptops"));
	assert_true(import_name_valid("asset_tag"));
	assert_false(import_name_valid(""));
	assert_false(import_name_valid("a b"));
	assert_false(import_name_valid("a,b"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_quoted),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_large),
		cmocka_unit_test(test_row_checks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
