/*
 * names: certificate name syntax checks (see names.h).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>

#include "names.h"

int name_dns_valid(const char *s)
{
	size_t n = strlen(s), label = 0;
	if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '-'))
			return 0;
		if (label == 0 && c == '-')
			return 0;
		if (++label > 63)
			return 0;
	}
	return s[n - 1] != '-';
}

int name_ip_valid(const char *s)
{
	unsigned char buf[16];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

int name_email_valid(const char *s)
{
	const char *at = strchr(s, '@');
	if (at == NULL || at == s || strchr(at + 1, '@') != NULL || strlen(s) > 254)
		return 0;
	for (const char *p = s; *p; p++)
		if (*p <= ' ' || *p >= 0x7f)
			return 0;
	return name_dns_valid(at + 1);
}

int name_cn_valid(const char *s)
{
	size_t n = strlen(s);
	if (n > NAME_CN_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}
