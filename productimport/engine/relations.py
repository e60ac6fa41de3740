"""The DuckDB relations of one import, named in one place, in the order they are made.

Every stage is a function that is handed the names of the relations it reads and
returns the name of the one it makes; no stage reads a relation by a name it was not
given. The runner (runner.py) owns this plan and hands the names from stage to stage.

    stage (module)               reads                         makes
    scan the file (parse)        the file                      RAW
    project (presets)            RAW                           STAGED (view)
    type (validate)              STAGED                        TYPED (view)
    first pass (runner)          STAGED                        FIRST_PASS, CHECKED (views
                                                               over CHECKED_ROWS)
    current products (merge)     the current snapshot          CURRENT (view)
    keys (merge)                 FIRST_PASS, CURRENT           KEYED
    row rules (validate)         CHECKED, KEYED                ROW_ERRORS
    accepted rows (merge)        KEYED, ROW_ERRORS, TYPED      (SQL for the merge)
    merge and write (merge)      the accepted rows, CURRENT    the next snapshot (Parquet)

A streamed CSV file is read a second time, in parallel and unnumbered, for the merge
(runner._incoming): RAW_UNNUMBERED, STAGED_UNNUMBERED, TYPED_UNNUMBERED; the few first
occurrences of repeated keys that a hash cannot pick are fetched by number (merge.
accepted_by_key, with its own working tables).
"""

from __future__ import annotations

RAW = "raw"  # rn, c0..cN: the file's records, text
STAGED = "staged"  # canonical fields as text (*_raw for the ones parsed later)
TYPED = "typed"  # STAGED with status, commodity_type, price, currency, tags parsed
CHECKED_ROWS = "checked_rows"  # the first pass, stored: keys, fingerprint, suspect, detail
FIRST_PASS = "first_pass"  # CHECKED_ROWS numbered: every record's rn, keys and fingerprint
CHECKED = "checked"  # the suspect records, with the typed fields the field rules read
CURRENT = "cur"  # the catalog's current products
KEYED = "keyed"  # each row's resolved catalog key, its first occurrence, whether known
ROW_ERRORS = "row_errors"  # rn, column_name, code, message, value, ref_rn
RAW_UNNUMBERED = "raw_unnumbered"
STAGED_UNNUMBERED = "staged_unnumbered"
TYPED_UNNUMBERED = "typed_unnumbered"
UNTOUCHED = "untouched"  # current products the file leaves as they are (merge)
# The merge runs bucket by bucket (runner._merge_buckets):
INCOMING_SHAPE = "incoming_shape"  # no rows: the columns of the accepted rows, typed
CURRENT_BUCKET = "cur_bucket"  # one bucket of CURRENT
KEYED_BUCKET = "keyed_bucket"  # the rows of KEYED in that bucket
KEYED_BY_BUCKET = "keyed_by_bucket"  # KEYED narrowed to rn, sku, bucket, in bucket order
