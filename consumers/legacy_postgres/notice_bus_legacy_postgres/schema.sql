-- A national police system's existing "wanted persons" schema (PostgreSQL), as the
-- legacy-postgres plug-in (notice_bus_legacy_postgres) finds it. It belongs to the bureau:
-- the plug-in never creates or alters it; the tests apply this file to a fresh database to
-- play the existing system.
--
-- How INTERPOL's fields land here:
--   wp_ref            the INTERPOL notice id, e.g. '2026/100'
--   surname, given_names, marks, birth_place   name, forename, distinguishing marks, place
--   birth_date_text   'YYYY-MM-DD', 'YYYY-MM' or 'YYYY' (partial dates as INTERPOL gives them)
--   gender            'M' or 'F'; NULL when unknown (INTERPOL's 'U' or nothing)
--   country codes     ISO 3166-1 alpha-2, as INTERPOL sends them (no alpha-3 conversion)
--   height_cm         centimetres, rounded (INTERPOL gives metres)
--   weight_kg         kilograms, one decimal
--   record_state      'A' active, 'W' withdrawn (cancelled by INTERPOL)
--   interpol_revision the notice's version; only a higher one may change the record
-- Eye and hair colours, languages and images have no place in this system and are not kept.
--
-- A cancellation for a notice the system never had is kept as a withdrawn record without
-- personal data: surname may be NULL on withdrawn records only, so that a late, older version
-- of that notice can never be taken in as active.

CREATE TABLE wanted_person (
    wp_ref            varchar(20)  PRIMARY KEY,
    surname           varchar(4000),
    given_names       varchar(4000),
    birth_date_text   varchar(10),
    birth_place       varchar(4000),
    gender            char(1)      CHECK (gender IN ('M', 'F')),
    birth_country     char(2),
    requesting_state  char(2),
    height_cm         integer      CHECK (height_cm BETWEEN 30 AND 280),
    weight_kg         numeric(4, 1),
    marks             text,
    record_state      char(1)      NOT NULL DEFAULT 'A' CHECK (record_state IN ('A', 'W')),
    interpol_revision integer      NOT NULL,
    last_change       timestamptz  NOT NULL DEFAULT now(),
    withdrawn_reason  text,
    CONSTRAINT wanted_person_active_has_surname CHECK (record_state = 'W' OR surname IS NOT NULL)
);

CREATE INDEX wanted_person_surname_idx ON wanted_person (upper(surname));

CREATE TABLE wanted_person_warrant (
    wp_ref        varchar(20) NOT NULL REFERENCES wanted_person (wp_ref) ON DELETE CASCADE,
    seq           smallint    NOT NULL,
    issuing_state char(2)     NOT NULL,
    offence       text        NOT NULL,
    offence_en    text,
    PRIMARY KEY (wp_ref, seq)
);

CREATE TABLE wanted_person_nationality (
    wp_ref  varchar(20) NOT NULL REFERENCES wanted_person (wp_ref) ON DELETE CASCADE,
    country char(2)     NOT NULL,
    PRIMARY KEY (wp_ref, country)
);
