/*
 * cli_help: the fleetgate CLI's help, one entry per command and
 * subcommand (`fleetgate COMMAND [SUB] --help`), and the closest valid
 * option for a mistyped one. The same table is what fleetgate(1) must
 * cover (tests/man_drift.sh checks the man page against `fleetgate
 * commands`).
 */
#ifndef FG_CLI_HELP_H
#define FG_CLI_HELP_H

#include <stdio.h>

/* Print the help of cmd (and sub, may be NULL) to f. A command without a
 * known sub gets the help of all its subcommands. 0, or -1 when cmd is not
 * a command. */
int cli_help_print(FILE *f, const char *cmd, const char *sub);

/* Print "COMMAND [SUB]" for every entry, one a line (for completion and
 * the man-page drift test). */
void cli_help_list(FILE *f);

/* Whether cmd is a command of the table. */
int cli_help_is_command(const char *cmd);

/* The candidate closest to word by edit distance, or NULL when none is
 * within a third of word's length (at least 2 edits). */
const char *cli_help_closest(const char *word, const char *const *cands, size_t n);

#endif
