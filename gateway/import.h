/*
 * import: bulk provisioning of devices from a CSV file
 * (`fleetgate device import`).
 *
 * The file has a header row naming its columns: serial (required),
 * hostname and group (optional), and any further columns, kept as the
 * device's free attributes. Each row becomes a pre-registered device
 * (state registered) with a one-use enrollment token bound to it and, when
 * asked, a bootstrap bundle <serial>.bundle holding that token.
 *
 * All or nothing: the rows go into one store transaction, and a bad row
 * (reported as "FILE:LINE: what is wrong") rolls it back and removes the
 * bundles written so far. A serial registered before with the same data is
 * left as it is ("unchanged"), so the same file can be imported again.
 */
#ifndef FG_IMPORT_H
#define FG_IMPORT_H

#include <stdint.h>
#include <stdio.h>

#include "fg_bundle.h"
#include "store.h"

struct import_opts {
	const char *path;               /* the CSV file */
	const char *group;              /* group for rows with an empty group, or NULL */
	int64_t ttl;                    /* lifetime of the tokens, seconds */
	const char *bundle_dir;         /* write <serial>.bundle files here, or NULL */
	const struct fg_bundle *tmpl;   /* endpoint, server key, anchors of the bundles */
	int progress;                   /* draw a progress bar on errf */
	FILE *errf;                     /* where bad rows are reported */
};

struct import_result {
	long rows;
	long imported;
	long unchanged;
	long bundles;
	long errors;
	double seconds;
};

/* Import o->path into st. 0 when committed (res filled); -1 when nothing
 * was committed: the bad rows went to o->errf and err sums up. */
int device_import(struct store *st, const struct import_opts *o, struct import_result *res,
		  char *err, size_t errlen);

/* Row checks, shared with the unit tests: 1 when valid. */
int import_serial_valid(const char *s);
int import_hostname_valid(const char *s);   /* "" is valid: the device reports it */
int import_name_valid(const char *s);       /* group and attribute names */

#endif
