-- Registry: the hierarchy region → cluster → enterprise → site → line → device,
-- and edge gateways with the devices they serve (DESIGN §4).

CREATE TABLE region (
    code        char(6) PRIMARY KEY CHECK (code ~ '^[1-9][0-9]{5}$'),
    name        text NOT NULL,
    level       text NOT NULL CHECK (level IN ('province', 'city', 'county')),
    parent_code char(6) REFERENCES region (code)
);

CREATE TABLE cluster (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code          text NOT NULL UNIQUE,
    name          text NOT NULL,
    region_code   char(6) NOT NULL REFERENCES region (code),
    industry_code text NOT NULL
);

CREATE TABLE enterprise (
    id                    integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    credit_code           char(18) NOT NULL UNIQUE,
    name                  text NOT NULL,
    region_code           char(6) NOT NULL REFERENCES region (code),
    industry_code         text NOT NULL,
    above_designated_size boolean NOT NULL DEFAULT false,  -- 规上
    key_enterprise        boolean NOT NULL DEFAULT false,  -- 重点
    time_zone             text NOT NULL DEFAULT 'Asia/Shanghai',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX enterprise_region_idx ON enterprise (region_code);

CREATE TABLE enterprise_cluster (
    enterprise_id integer NOT NULL REFERENCES enterprise (id) ON DELETE CASCADE,
    cluster_id    integer NOT NULL REFERENCES cluster (id) ON DELETE CASCADE,
    PRIMARY KEY (enterprise_id, cluster_id)
);
CREATE INDEX enterprise_cluster_cluster_idx ON enterprise_cluster (cluster_id);

CREATE TABLE site (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    enterprise_id integer NOT NULL REFERENCES enterprise (id) ON DELETE CASCADE,
    code          text NOT NULL,
    name          text NOT NULL,
    UNIQUE (enterprise_id, code)
);

CREATE TABLE line (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    enterprise_id integer NOT NULL REFERENCES enterprise (id) ON DELETE CASCADE,
    site_id       integer REFERENCES site (id) ON DELETE SET NULL,
    code          text NOT NULL,
    name          text NOT NULL,
    UNIQUE (enterprise_id, code)
);

CREATE TABLE device (
    id                      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    enterprise_id           integer NOT NULL REFERENCES enterprise (id) ON DELETE CASCADE,
    code                    text NOT NULL,
    name                    text NOT NULL,
    device_type             text NOT NULL,
    site_id                 integer REFERENCES site (id) ON DELETE SET NULL,
    line_id                 integer REFERENCES line (id) ON DELETE SET NULL,
    is_production_equipment boolean NOT NULL DEFAULT true,
    is_nc                   boolean NOT NULL DEFAULT false,
    key_process             boolean NOT NULL DEFAULT false,
    ideal_cycle_time_s      double precision CHECK (ideal_cycle_time_s > 0),
    commissioned_on         date,
    decommissioned_on       date,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (enterprise_id, code),
    CONSTRAINT device_service_dates_in_order
        CHECK (decommissioned_on IS NULL OR commissioned_on IS NULL
               OR decommissioned_on >= commissioned_on)
);
CREATE INDEX device_line_idx ON device (line_id);

CREATE TABLE edge_gateway (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    edge_id       text NOT NULL UNIQUE,
    enterprise_id integer NOT NULL REFERENCES enterprise (id) ON DELETE CASCADE,
    name          text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE edge_device (
    edge_pk   integer NOT NULL REFERENCES edge_gateway (id) ON DELETE CASCADE,
    device_id integer NOT NULL REFERENCES device (id) ON DELETE CASCADE,
    PRIMARY KEY (edge_pk, device_id)
);
