-- Databases for compose.yaml: HQ's (created by the image as POSTGRES_DB), the tracker's, and
-- one per example country, as each bureau would have its own system.
CREATE DATABASE tracker;
CREATE DATABASE country_fr;
CREATE DATABASE country_th;
