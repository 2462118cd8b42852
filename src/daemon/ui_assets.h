/*
 * The dashboard's files (src/daemon/ui/), built into zerogpud by scripts/embed.py.
 */
#ifndef ZGPU_DAEMON_UI_ASSETS_H
#define ZGPU_DAEMON_UI_ASSETS_H

#include <stddef.h>

struct ui_asset {
	const char *name; /* the file's name, as served under /ui/ */
	const char *content_type;
	const unsigned char *data;
	size_t len;
};

/* Every file, then one with a NULL name. */
extern const struct ui_asset ui_assets[];

#endif
