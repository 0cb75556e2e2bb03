-- Webhook events: 5,000 bodies mutated from Maileroo's example payloads go
-- through every parser entry point without a crash, an internal error, or
-- an error outside SQLSTATE class 22, and every row parsed from an object
-- agrees with jsonb's reading of the same body (test/fuzz/fuzz.py; the full
-- run uses 100,000 bodies).
CREATE EXTENSION maileroo;
\! python3 test/fuzz/fuzz.py --quick --dbname contrib_regression
DROP EXTENSION maileroo;
