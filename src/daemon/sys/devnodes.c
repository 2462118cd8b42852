#include "daemon/sys/devnodes.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* The node at path, added once; its index, or -errno. */
static int add_node(struct devnodes *dn, const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	if (!S_ISCHR(st.st_mode)) {
		snprintf(err, errlen, "%s is not a character device", path);
		return -ENODEV;
	}
	for (int i = 0; i < dn->count; i++)
		if (dn->dev[i] == st.st_rdev)
			return i;
	if (dn->count == DEVNODES_MAX) {
		snprintf(err, errlen, "more than %d device nodes to gate", DEVNODES_MAX);
		return -E2BIG;
	}
	snprintf(dn->path[dn->count], DEVNODES_PATH_MAX, "%s", path);
	dn->dev[dn->count] = st.st_rdev;
	return dn->count++;
}

/*
 * The capability minor mig-minors gives `name` (e.g. "gpu0/gi1/access").
 * Returns it, or -errno with the reason in err.
 */
static int mig_minor(const char *mig_minors, const char *name, char *err, size_t errlen)
{
	FILE *f = fopen(mig_minors, "re");
	if (!f) {
		int e = errno;
		snprintf(err, errlen, "%s: %s (the MIG capability minors)", mig_minors,
			 strerror(e));
		return -e;
	}
	char line[256], key[128];
	int minor, found = -ENOENT;
	while (found < 0 && fgets(line, sizeof(line), f))
		if (sscanf(line, "%127s %d", key, &minor) == 2 && strcmp(key, name) == 0 &&
		    minor >= 0)
			found = minor;
	fclose(f);
	if (found < 0)
		snprintf(err, errlen, "%s does not list %s", mig_minors, name);
	return found;
}

/* The capability node of one MIG entry (a GPU instance, or a compute instance in one). */
static int add_cap_node(struct devnodes *dn, const char *device_dir, const char *mig_minors,
			const char *name, char *err, size_t errlen)
{
	int minor = mig_minor(mig_minors, name, err, errlen);
	if (minor < 0)
		return minor;
	char path[DEVNODES_PATH_MAX];
	snprintf(path, sizeof(path), "%s/nvidia-caps/nvidia-cap%d", device_dir, minor);
	return add_node(dn, path, err, errlen);
}

static int device_nodes(struct devnodes *dn, const struct device *d, const char *device_dir,
			const char *mig_minors, int out[DEVNODES_PER_DEVICE], char *err,
			size_t errlen)
{
	char path[DEVNODES_PATH_MAX];
	if (d->node_minor < 0) {
		snprintf(err, errlen, "the driver did not say which node is GPU %d's", d->index);
		return -ENODEV;
	}
	if (d->mig_index < 0) {
		snprintf(path, sizeof(path), "%s/nvidia%d", device_dir, d->node_minor);
		return (out[0] = add_node(dn, path, err, errlen)) < 0 ? out[0] : 0;
	}
	if (d->gi_id < 0 || d->ci_id < 0) {
		snprintf(err, errlen, "the driver did not say which MIG instance device %d is",
			 d->index);
		return -ENODEV;
	}
	char name[96];
	snprintf(name, sizeof(name), "gpu%d/gi%d/access", d->node_minor, d->gi_id);
	if ((out[0] = add_cap_node(dn, device_dir, mig_minors, name, err, errlen)) < 0)
		return out[0];
	snprintf(name, sizeof(name), "gpu%d/gi%d/ci%d/access", d->node_minor, d->gi_id, d->ci_id);
	return (out[1] = add_cap_node(dn, device_dir, mig_minors, name, err, errlen)) < 0 ? out[1]
											  : 0;
}

int devnodes_find(struct devnodes *dn, const struct inventory *inv, const char *device_dir,
		  const char *mig_minors, char *err, size_t errlen)
{
	memset(dn, 0, sizeof(*dn));
	for (size_t i = 0; i < INV_MAX_DEVICES; i++)
		for (int k = 0; k < DEVNODES_PER_DEVICE; k++)
			dn->of_device[i][k] = -1;
	for (size_t i = 0; i < inv->count; i++) {
		char why[512];
		int r = device_nodes(dn, &inv->devices[i], device_dir, mig_minors, dn->of_device[i],
				     why, sizeof(why));
		if (r < 0) {
			snprintf(err, errlen, "device %zu (%s): %s", i, inv->devices[i].uuid, why);
			return r;
		}
	}
	return 0;
}
