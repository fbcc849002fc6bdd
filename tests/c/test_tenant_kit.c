/*
 * C test of libtenant_kit through include/tenant_kit.h, built and run by
 * tests/c/run (once against the shared and once against the static library):
 *   test_tenant_kit path/to/tests/fixtures/app_schema.sql
 * Covers versions, argument errors on every entry point, and a backup,
 * verify and restore round trip with progress callbacks and cancellation.
 * Prints one line per failed check and closes with
 * "c-api: N passed, M failed"; exits non-zero when anything failed.
 * TK_TEST_VERBOSE=1 prints the passing checks as well.
 *
 * TK_EXPECTED_VERSION is passed by tests/c/run from Cargo.toml.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */

#include "tenant_kit.h"

#include <dirent.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef TK_EXPECTED_VERSION
#error "compile with -DTK_EXPECTED_VERSION=\"x.y.z\""
#endif

static int passed = 0;
static int failed = 0;
static int verbose = 0; /* TK_TEST_VERBOSE=1: print passing checks too */

static void check(int ok, const char *what, const char *detail) {
    if (ok) {
        passed++;
        if (verbose) printf("ok: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    } else {
        failed++;
        printf("FAIL: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    }
}

/* The entry points that take a JSON document, behind one signature. */
typedef tk_status (*json_fn)(const char *json, char **out_json);

static tk_status call_backup(const char *json, char **out) {
    return tk_backup(json, NULL, NULL, out);
}
static tk_status call_restore(const char *json, char **out) {
    return tk_restore(json, NULL, NULL, out);
}
static tk_status call_verify(const char *json, char **out) {
    return tk_verify(json, NULL, NULL, out);
}
static tk_status call_prune(const char *json, char **out) {
    return tk_prune(json, out);
}
static tk_status call_settings(const char *json, char **out) {
    return tk_settings_resolve(json, out);
}

static const struct {
    const char *name;
    json_fn fn;
} functions[] = {
    {"tk_backup", call_backup},
    {"tk_restore", call_restore},
    {"tk_verify", call_verify},
    {"tk_prune", call_prune},
    {"tk_settings_resolve", call_settings},
};

/* Inputs every function must reject with TK_ARGUMENT_ERROR. */
static const struct {
    const char *what;
    const char *json;
} bad_inputs[] = {
    {"NULL", NULL},
    {"invalid UTF-8", "{\"database\": \"\xff\xfe\"}"},
    {"malformed JSON", "{\"database\": "},
    {"empty string", ""},
    {"JSON that is not an object", "[1, 2, 3]"},
};

static void test_versions(void) {
    const char *version = tk_version();
    check(version != NULL && strcmp(version, TK_EXPECTED_VERSION) == 0,
          "tk_version() equals the Cargo.toml version", version);

    const char *sqlite = tk_sqlite_version();
#ifdef TK_BUNDLED_SQLITE
    /* Built with SQLite compiled in: the library runs that copy, whatever
     * this program links (the system's, for the shared build). */
    check(sqlite != NULL && strcmp(sqlite, TK_BUNDLED_SQLITE) == 0,
          "tk_sqlite_version() is the bundled SQLite's", sqlite);
#ifdef TK_STATIC_BUNDLED
    check(strcmp(sqlite3_libversion(), TK_BUNDLED_SQLITE) == 0,
          "this program's sqlite3_* are the static library's copy", sqlite3_libversion());
#endif
#else
    /* One SQLite in the process: the library uses the system libsqlite3,
     * the same one this program links. */
    check(sqlite != NULL && strcmp(sqlite, sqlite3_libversion()) == 0,
          "tk_sqlite_version() equals sqlite3_libversion()", sqlite);
#endif
    check(sqlite != NULL && strncmp(sqlite, "3.", 2) == 0, "tk_sqlite_version() is 3.x", sqlite);
}

static void test_bad_inputs(void) {
    char label[160];
    for (size_t f = 0; f < sizeof functions / sizeof functions[0]; f++) {
        for (size_t i = 0; i < sizeof bad_inputs / sizeof bad_inputs[0]; i++) {
            char *out = (char *)"not touched"; /* the call must overwrite it */
            tk_status status = functions[f].fn(bad_inputs[i].json, &out);
            snprintf(label, sizeof label, "%s(%s) gives TK_ARGUMENT_ERROR", functions[f].name,
                     bad_inputs[i].what);
            check(status == TK_ARGUMENT_ERROR, label, NULL);
            snprintf(label, sizeof label, "%s(%s) explains in *out_json", functions[f].name,
                     bad_inputs[i].what);
            check(out != NULL && strstr(out, "\"kind\":\"argument\"") != NULL &&
                      strstr(out, "\"message\":\"") != NULL,
                  label, out);
            tk_string_free(out);
        }

        /* No place to put the result: an error, not a crash. */
        tk_status status = functions[f].fn("{}", NULL);
        snprintf(label, sizeof label, "%s(out_json = NULL) gives TK_ARGUMENT_ERROR",
                 functions[f].name);
        check(status == TK_ARGUMENT_ERROR, label, NULL);
    }
}

static void test_free(void) {
    tk_string_free(NULL); /* must be a no-op */
    check(1, "tk_string_free(NULL) returns", NULL);
}

static void test_status_values(void) {
    /* The numeric values are part of the ABI. */
    check(TK_OK == 0 && TK_ARGUMENT_ERROR == 1 && TK_ARCHIVE_ERROR == 2 &&
              TK_INTEGRITY_ERROR == 3 && TK_SCHEMA_ERROR == 4 && TK_CONFLICT_ERROR == 5 &&
              TK_DATABASE_ERROR == 6 && TK_FILE_ERROR == 7 && TK_CANCELLED == 8 &&
              TK_INTERNAL_ERROR == 9,
          "tk_status values are stable", NULL);
}

/* ---- backup, verify, restore on a generated database ------------------- */

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (text && fread(text, 1, (size_t)size, f) != (size_t)size) {
        free(text);
        text = NULL;
    }
    if (text) text[size] = '\0';
    fclose(f);
    return text;
}

static int exec_sql(const char *db_path, const char *sql) {
    sqlite3 *db = NULL;
    char *error = NULL;
    int rc = sqlite3_open(db_path, &db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, &error);
    if (rc != SQLITE_OK) printf("sqlite: %s: %s\n", db_path, error ? error : sqlite3_errmsg(db));
    sqlite3_free(error);
    sqlite3_close(db);
    return rc == SQLITE_OK;
}

static long long query_int(const char *db_path, const char *sql) {
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    long long value = -1;
    if (sqlite3_open(db_path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW)
        value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
}

static int count_entries(const char *dir_path) {
    DIR *dir = opendir(dir_path);
    if (!dir) return -1;
    int count = 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;)
        if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) count++;
    closedir(dir);
    return count;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Copies the string value of "key" out of a flat JSON text (no escapes in
 * our paths). Returns 0 when absent. */
static int json_string(const char *json, const char *key, char *out, size_t size) {
    char needle[64];
    snprintf(needle, sizeof needle, "\"%s\":\"", key);
    const char *start = json ? strstr(json, needle) : NULL;
    if (!start) return 0;
    start += strlen(needle);
    const char *end = strchr(start, '"');
    if (!end || (size_t)(end - start) >= size) return 0;
    memcpy(out, start, (size_t)(end - start));
    out[end - start] = '\0';
    return 1;
}

/* Progress callback state: counts events, remembers steps, cancels on demand. */
struct progress_log {
    int events;
    int cancel_at; /* cancel when this many events were seen; 0: never */
    char steps[2048];
};

static int on_progress(void *userdata, const char *event_json) {
    struct progress_log *log = userdata;
    log->events++;
    char step[64];
    if (json_string(event_json, "step", step, sizeof step) &&
        strlen(log->steps) + strlen(step) + 2 < sizeof log->steps) {
        strcat(log->steps, step);
        strcat(log->steps, " ");
    }
    return log->cancel_at > 0 && log->events >= log->cancel_at;
}

static const char *seed_rows =
    "INSERT INTO tenants (id, name, created_at, updated_at) VALUES"
    "  (1, 'Acme', '2026-11-01', '2026-11-01'), (2, 'Other', '2026-11-01', '2026-11-01');"
    "INSERT INTO users (id, tenant_id, email, created_at, updated_at) VALUES"
    "  (1, 1, 'a@acme.test', '2026-11-01', '2026-11-01'), (2, 1, 'b@acme.test', '2026-11-01', '2026-11-01'),"
    "  (3, 2, 'c@other.test', '2026-11-01', '2026-11-01');"
    "INSERT INTO projects (id, tenant_id, name, budget, created_at, updated_at) VALUES"
    "  (1, 1, 'Launch', 1250.5, '2026-11-01', '2026-11-01'), (2, 2, 'Secret', NULL, '2026-11-01', '2026-11-01');"
    "INSERT INTO tasks (id, tenant_id, project_id, user_id, title, estimate, created_at, updated_at) VALUES"
    "  (1, 1, 1, 1, 'Plan', 2.5, '2026-11-01', '2026-11-01'), (2, 1, 1, 2, 'Ship', NULL, '2026-11-01', '2026-11-01'),"
    "  (3, 2, 2, 3, 'Hide', 1.0, '2026-11-01', '2026-11-01');";

static void test_round_trip(const char *schema_path) {
    char dir[] = "/tmp/tenant_kit_c_test.XXXXXX";
    if (!mkdtemp(dir)) {
        check(0, "mkdtemp", NULL);
        return;
    }
    char source[256], target[256], out_dir[256], cancel_dir[256], bogus[256], options[2048];
    snprintf(source, sizeof source, "%s/source.sqlite3", dir);
    snprintf(target, sizeof target, "%s/target.sqlite3", dir);
    snprintf(out_dir, sizeof out_dir, "%s/archives", dir);
    snprintf(cancel_dir, sizeof cancel_dir, "%s/cancelled", dir);
    snprintf(bogus, sizeof bogus, "%s/bogus.tar.gz", dir);

    char *schema = read_file(schema_path);
    check(schema != NULL, "read the fixture schema", schema_path);
    int ready = schema && exec_sql(source, schema) && exec_sql(source, seed_rows) &&
                exec_sql(target, schema) && mkdir(out_dir, 0700) == 0 && mkdir(cancel_dir, 0700) == 0;
    free(schema);
    check(ready, "set up the source and target databases", dir);
    if (!ready) goto cleanup;

    /* Backup with a progress callback. */
    struct progress_log log = {0};
    char *out = NULL;
    snprintf(options, sizeof options,
             "{\"database\":\"%s\",\"tenant_id\":1,\"output_dir\":\"%s\"}", source, out_dir);
    tk_status status = tk_backup(options, on_progress, &log, &out);
    check(status == TK_OK, "tk_backup gives TK_OK", out);
    char archive[512] = "";
    check(json_string(out, "path", archive, sizeof archive) && access(archive, R_OK) == 0,
          "tk_backup result names an existing archive", out);
    check(out != NULL && strstr(out, "\"users\":2") != NULL, "tk_backup wrote tenant 1's two users", out);
    check(strncmp(log.steps, "start ", 6) == 0 && strstr(log.steps, "done ") != NULL,
          "tk_backup reported progress from start to done", log.steps);
    tk_string_free(out);

    /* Verify the archive, and reject something that is not one. */
    out = NULL;
    snprintf(options, sizeof options, "{\"archive\":\"%s\"}", archive);
    status = tk_verify(options, NULL, NULL, &out);
    check(status == TK_OK, "tk_verify accepts the archive", out);
    tk_string_free(out);

    FILE *f = fopen(bogus, "wb");
    if (f) {
        fputs("this is not a tar.gz archive\n", f);
        fclose(f);
    }
    out = NULL;
    snprintf(options, sizeof options, "{\"archive\":\"%s\"}", bogus);
    status = tk_verify(options, NULL, NULL, &out);
    check(status == TK_ARCHIVE_ERROR && out && strstr(out, "\"kind\":\"archive\"") != NULL,
          "tk_verify rejects a bogus archive with TK_ARCHIVE_ERROR", out);
    tk_string_free(out);

    /* Restore into an empty database of the same schema. */
    struct progress_log restore_log = {0};
    out = NULL;
    snprintf(options, sizeof options, "{\"database\":\"%s\",\"archive\":\"%s\",\"tenant_id\":1}",
             target, archive);
    status = tk_restore(options, on_progress, &restore_log, &out);
    check(status == TK_OK, "tk_restore gives TK_OK", out);
    tk_string_free(out);
    check(strstr(restore_log.steps, "commit ") != NULL && strstr(restore_log.steps, "done ") != NULL,
          "tk_restore reported progress through commit and done", restore_log.steps);
    check(query_int(target, "SELECT count(*) FROM users WHERE tenant_id = 1") == 2,
          "the restore brought back tenant 1's users", NULL);
    check(query_int(target, "SELECT count(*) FROM tasks WHERE tenant_id = 1 AND title IN ('Plan', 'Ship')") == 2,
          "the restore brought back tenant 1's tasks", NULL);
    check(query_int(target, "SELECT count(*) FROM tenants WHERE id = 1 AND name = 'Acme'") == 1,
          "the restore created the tenant row", NULL);
    check(query_int(target, "SELECT count(*) FROM users WHERE tenant_id <> 1") == 0 &&
              query_int(target, "SELECT count(*) FROM projects WHERE name = 'Secret'") == 0,
          "the restore brought nothing of tenant 2", NULL);

    /* A callback that returns non-zero cancels, and no archive is left behind. */
    struct progress_log cancel_log = {.cancel_at = 2};
    out = NULL;
    snprintf(options, sizeof options,
             "{\"database\":\"%s\",\"tenant_id\":1,\"output_dir\":\"%s\"}", source, cancel_dir);
    status = tk_backup(options, on_progress, &cancel_log, &out);
    check(status == TK_CANCELLED && out && strstr(out, "\"kind\":\"cancelled\"") != NULL,
          "a callback returning non-zero gives TK_CANCELLED", out);
    tk_string_free(out);
    check(cancel_log.events >= 2 && cancel_log.events <= 3,
          "no events after the cancel but one last failed event", cancel_log.steps);
    check(count_entries(cancel_dir) == 0, "a cancelled backup leaves no file behind", cancel_dir);

    /* A database that does not exist is an error, not a new empty file. */
    out = NULL;
    snprintf(options, sizeof options,
             "{\"database\":\"%s/missing.sqlite3\",\"tenant_id\":1,\"output_dir\":\"%s\"}", dir, out_dir);
    status = tk_backup(options, NULL, NULL, &out);
    check(status != TK_OK && out && strstr(out, "\"kind\":") != NULL,
          "tk_backup of a missing database fails with an explanation", out);
    tk_string_free(out);
    snprintf(options, sizeof options, "%s/missing.sqlite3", dir);
    check(access(options, F_OK) != 0, "tk_backup did not create the missing database", NULL);

cleanup:
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s path/to/tests/fixtures/app_schema.sql\n", argv[0]);
        return 2;
    }
    verbose = getenv("TK_TEST_VERBOSE") != NULL;
    test_versions();
    test_status_values();
    test_bad_inputs();
    test_free();
    test_round_trip(argv[1]);

    printf("c-api: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
