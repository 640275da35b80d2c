#!/usr/bin/env python3
"""validate.py SCHEMA FILE...: each FILE (an events array) against SCHEMA."""
import json, sys
import jsonschema

schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
bad = 0
for path in sys.argv[2:]:
    for err in validator.iter_errors(json.load(open(path))):
        bad += 1
        print("%s: %s: %s" % (path, "/".join(map(str, err.absolute_path)),
                              err.message), file=sys.stderr)
print("schema: %d files, %d errors" % (len(sys.argv) - 2, bad))
sys.exit(1 if bad else 0)
