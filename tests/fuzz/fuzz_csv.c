/*
 * fuzz_csv: the CSV reader of `fleetgate import` (RFC 4180 quoting, line
 * counting, field and record limits), every record to the end or the first
 * error.
 */
#include <stddef.h>
#include <stdint.h>

#include "csv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct csv *c = csv_new((const char *)data, size);
	if (c == NULL)
		return 0;
	char **fields;
	size_t n;
	long line;
	char err[256];
	while (csv_next(c, &fields, &n, &line, err, sizeof err) == 1)
		;
	csv_free(c);
	return 0;
}
