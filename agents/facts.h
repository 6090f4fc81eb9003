/*
 * facts: what the agent tells the gateway about its device, read from the
 * kernel (procfs, sysfs, efivars) and /etc. Informational for policies; the
 * identity is the CURVE key.
 */
#ifndef FG_FACTS_H
#define FG_FACTS_H

#include "fleetgate.pb-c.h"

struct agent_facts {
	char hostname[256];
	char machine_id[64];
	char os_id[64];
	char os_version[64];
	char os_pretty_name[256];
	char kernel_release[128];
	char arch[64];
	char dmi_product_uuid[64];
	char dmi_product_serial[128];
	int secure_boot;            /* -1 unknown, 0 off, 1 on */
	int tpm_present;
};

/* Read the facts. root prefixes every file path (tests feed a fake tree);
 * NULL means $FLEETGATE_FACTS_ROOT or "". Missing files leave fields empty. */
void facts_read(const char *root, struct agent_facts *f);

/* Point pf's fields at f's strings (pf borrows; f must outlive it). */
void facts_to_proto(const struct agent_facts *f, Fleetgate__Facts *pf);

#endif
