//! The schemas this service provider serves (RFC 7643 §4, §8.7), as data:
//! they are published at `/Schemas` and drive attribute name resolution,
//! type checks and coercion, case sensitivity in filters, mutability and
//! what is returned.

use serde_json::{json, Map, Value};

pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub(crate) const ENTERPRISE_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub(crate) const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
pub(crate) const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub(crate) const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
pub(crate) const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub(crate) const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub(crate) const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub(crate) const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    String,
    Boolean,
    #[allow(dead_code)]
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

impl Ty {
    fn as_str(self) -> &'static str {
        match self {
            Ty::String => "string",
            Ty::Boolean => "boolean",
            Ty::Decimal => "decimal",
            Ty::Integer => "integer",
            Ty::DateTime => "dateTime",
            Ty::Binary => "binary",
            Ty::Reference => "reference",
            Ty::Complex => "complex",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Returned {
    Always,
    Never,
    Default,
    #[allow(dead_code)]
    Request,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Uniqueness {
    None,
    Server,
}

/// One attribute definition (RFC 7643 §7).
#[derive(Debug)]
pub(crate) struct Attr {
    pub name: &'static str,
    pub ty: Ty,
    pub multi: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical: &'static [&'static str],
    pub ref_types: &'static [&'static str],
    pub sub: &'static [Attr],
    pub description: &'static str,
}

impl Attr {
    const fn new(name: &'static str, ty: Ty, description: &'static str) -> Self {
        Attr {
            name,
            ty,
            multi: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical: &[],
            ref_types: &[],
            sub: &[],
            description,
        }
    }
    const fn string(name: &'static str, description: &'static str) -> Self {
        Attr::new(name, Ty::String, description)
    }
    const fn complex(name: &'static str, sub: &'static [Attr], description: &'static str) -> Self {
        let mut a = Attr::new(name, Ty::Complex, description);
        a.sub = sub;
        a
    }
    const fn reference(
        name: &'static str,
        ref_types: &'static [&'static str],
        description: &'static str,
    ) -> Self {
        let mut a = Attr::new(name, Ty::Reference, description);
        a.ref_types = ref_types;
        a.case_exact = true;
        a
    }
    const fn multi(mut self) -> Self {
        self.multi = true;
        self
    }
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    const fn read_only(mut self) -> Self {
        self.mutability = Mutability::ReadOnly;
        self
    }
    const fn immutable(mut self) -> Self {
        self.mutability = Mutability::Immutable;
        self
    }
    const fn write_only(mut self) -> Self {
        self.mutability = Mutability::WriteOnly;
        self.returned = Returned::Never;
        self
    }
    const fn always(mut self) -> Self {
        self.returned = Returned::Always;
        self
    }
    const fn unique(mut self) -> Self {
        self.uniqueness = Uniqueness::Server;
        self
    }
    const fn canonical(mut self, values: &'static [&'static str]) -> Self {
        self.canonical = values;
        self
    }

    /// The sub-attribute called `name`, compared case-insensitively.
    pub fn sub_attr(&self, name: &str) -> Option<&'static Attr> {
        find(self.sub, name)
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.ty.as_str()));
        m.insert("multiValued".into(), json!(self.multi));
        m.insert("description".into(), json!(self.description));
        m.insert("required".into(), json!(self.required));
        if self.ty != Ty::Complex && self.ty != Ty::Boolean {
            m.insert("caseExact".into(), json!(self.case_exact));
        }
        if !self.canonical.is_empty() {
            m.insert("canonicalValues".into(), json!(self.canonical));
        }
        m.insert(
            "mutability".into(),
            json!(match self.mutability {
                Mutability::ReadOnly => "readOnly",
                Mutability::ReadWrite => "readWrite",
                Mutability::Immutable => "immutable",
                Mutability::WriteOnly => "writeOnly",
            }),
        );
        m.insert(
            "returned".into(),
            json!(match self.returned {
                Returned::Always => "always",
                Returned::Never => "never",
                Returned::Default => "default",
                Returned::Request => "request",
            }),
        );
        m.insert(
            "uniqueness".into(),
            json!(match self.uniqueness {
                Uniqueness::None => "none",
                Uniqueness::Server => "server",
            }),
        );
        if self.ty == Ty::Reference {
            m.insert("referenceTypes".into(), json!(self.ref_types));
        }
        if self.ty == Ty::Complex {
            m.insert(
                "subAttributes".into(),
                Value::Array(self.sub.iter().map(Attr::to_json).collect()),
            );
        }
        Value::Object(m)
    }
}

/// The attribute called `name` in `attrs`, compared case-insensitively
/// (RFC 7643 §2.1: attribute names are case insensitive).
pub(crate) fn find(attrs: &'static [Attr], name: &str) -> Option<&'static Attr> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

#[derive(Debug)]
pub(crate) struct Schema {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attrs: &'static [Attr],
}

impl Schema {
    pub fn attr(&self, name: &str) -> Option<&'static Attr> {
        find(self.attrs, name)
    }

    pub fn to_json(&self, base_url: &str) -> Value {
        json!({
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": self.attrs.iter().map(Attr::to_json).collect::<Vec<_>>(),
            "meta": {
                "resourceType": "Schema",
                "location": format!("{base_url}/Schemas/{}", self.id),
            },
        })
    }
}

/// `id`, `externalId` and `meta`: part of every resource, not of a schema
/// (RFC 7643 §3.1).
pub(crate) static COMMON: &[Attr] = &[
    Attr::string(
        "id",
        "Unique identifier for the resource, assigned by the service provider.",
    )
    .exact()
    .read_only()
    .always()
    .unique(),
    Attr::string(
        "externalId",
        "Identifier of the resource as defined by the provisioning client.",
    )
    .exact(),
    Attr::complex(
        "meta",
        &[
            Attr::string(
                "resourceType",
                "The name of the resource type of the resource.",
            )
            .exact()
            .read_only(),
            Attr::new(
                "created",
                Ty::DateTime,
                "When the resource was added to the service provider.",
            )
            .read_only(),
            Attr::new(
                "lastModified",
                Ty::DateTime,
                "When the resource was last modified.",
            )
            .read_only(),
            Attr::reference("location", &["uri"], "The URI of the resource.").read_only(),
            Attr::string("version", "The version (ETag) of the resource.")
                .exact()
                .read_only(),
        ],
        "Resource metadata.",
    )
    .read_only(),
];

static EMAIL_SUB: &[Attr] = &[
    Attr::string("value", "E-mail address."),
    Attr::string(
        "display",
        "A human-readable name, primarily used for display purposes.",
    ),
    Attr::string("type", "A label indicating the attribute's function.")
        .canonical(&["work", "home", "other"]),
    Attr::new(
        "primary",
        Ty::Boolean,
        "Indicates the primary or preferred value.",
    ),
];
static PHONE_SUB: &[Attr] = &[
    Attr::string("value", "Phone number."),
    Attr::string(
        "display",
        "A human-readable name, primarily used for display purposes.",
    ),
    Attr::string("type", "A label indicating the attribute's function.")
        .canonical(&["work", "home", "mobile", "fax", "pager", "other"]),
    Attr::new(
        "primary",
        Ty::Boolean,
        "Indicates the primary or preferred value.",
    ),
];
static IMS_SUB: &[Attr] = &[
    Attr::string("value", "Instant messaging address."),
    Attr::string(
        "display",
        "A human-readable name, primarily used for display purposes.",
    ),
    Attr::string("type", "A label indicating the attribute's function.")
        .canonical(&["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]),
    Attr::new(
        "primary",
        Ty::Boolean,
        "Indicates the primary or preferred value.",
    ),
];
static PHOTO_SUB: &[Attr] = &[
    Attr::reference("value", &["external"], "URL of a photo of the user."),
    Attr::string(
        "display",
        "A human-readable name, primarily used for display purposes.",
    ),
    Attr::string("type", "A label indicating the attribute's function.")
        .canonical(&["photo", "thumbnail"]),
    Attr::new(
        "primary",
        Ty::Boolean,
        "Indicates the primary or preferred value.",
    ),
];
static ADDRESS_SUB: &[Attr] = &[
    Attr::string("formatted", "The full mailing address."),
    Attr::string("streetAddress", "The full street address component."),
    Attr::string("locality", "The city or locality component."),
    Attr::string("region", "The state or region component."),
    Attr::string("postalCode", "The zip code or postal code component."),
    Attr::string("country", "The country name component."),
    Attr::string("type", "A label indicating the attribute's function.")
        .canonical(&["work", "home", "other"]),
    Attr::new(
        "primary",
        Ty::Boolean,
        "Indicates the primary or preferred value.",
    ),
];
static GROUPS_SUB: &[Attr] = &[
    Attr::string("value", "The identifier of the user's group.")
        .exact()
        .read_only(),
    Attr::reference("$ref", &["Group"], "The URI of the group.").read_only(),
    Attr::string("display", "The display name of the group.").read_only(),
    Attr::string("type", "How the membership is derived.")
        .canonical(&["direct", "indirect"])
        .read_only(),
];
static GENERIC_SUB: &[Attr] = &[
    Attr::string("value", "The value."),
    Attr::string(
        "display",
        "A human-readable name, primarily used for display purposes.",
    ),
    Attr::string("type", "A label indicating the attribute's function."),
    Attr::new(
        "primary",
        Ty::Boolean,
        "Indicates the primary or preferred value.",
    ),
];
static CERT_SUB: &[Attr] = &[
    Attr::new("value", Ty::Binary, "The value of an X.509 certificate.").exact(),
    Attr::string(
        "display",
        "A human-readable name, primarily used for display purposes.",
    ),
    Attr::string("type", "A label indicating the attribute's function."),
    Attr::new(
        "primary",
        Ty::Boolean,
        "Indicates the primary or preferred value.",
    ),
];

static USER_ATTRS: &[Attr] = &[
    Attr::string(
        "userName",
        "Unique identifier for the user, typically used to authenticate; unique per provider, case-insensitively.",
    )
    .required()
    .unique(),
    Attr::complex(
        "name",
        &[
            Attr::string("formatted", "The full name, formatted for display."),
            Attr::string("familyName", "The family name."),
            Attr::string("givenName", "The given name."),
            Attr::string("middleName", "The middle name(s)."),
            Attr::string("honorificPrefix", "The honorific prefix(es)."),
            Attr::string("honorificSuffix", "The honorific suffix(es)."),
        ],
        "The components of the user's real name.",
    ),
    Attr::string("displayName", "The name of the user, suitable for display."),
    Attr::string("nickName", "The casual way to address the user."),
    Attr::reference("profileUrl", &["external"], "A URI of the user's online profile."),
    Attr::string("title", "The user's title, such as \"Vice President\"."),
    Attr::string("userType", "The relationship between the organization and the user."),
    Attr::string("preferredLanguage", "The user's preferred written or spoken language."),
    Attr::string("locale", "The user's default location for localisation."),
    Attr::string("timezone", "The user's time zone in IANA format."),
    Attr::new("active", Ty::Boolean, "The user's administrative status."),
    Attr::string(
        "password",
        "Accepted and discarded: this service never stores passwords.",
    )
    .exact()
    .write_only(),
    Attr::complex("emails", EMAIL_SUB, "E-mail addresses for the user.").multi(),
    Attr::complex("phoneNumbers", PHONE_SUB, "Phone numbers for the user.").multi(),
    Attr::complex("ims", IMS_SUB, "Instant messaging addresses for the user.").multi(),
    Attr::complex("photos", PHOTO_SUB, "URLs of photos of the user.").multi(),
    Attr::complex("addresses", ADDRESS_SUB, "Physical mailing addresses for the user.").multi(),
    Attr::complex(
        "groups",
        GROUPS_SUB,
        "The groups the user belongs to, derived from the groups' members.",
    )
    .multi()
    .read_only(),
    Attr::complex("entitlements", GENERIC_SUB, "Entitlements of the user.").multi(),
    Attr::complex("roles", GENERIC_SUB, "Roles of the user.").multi(),
    Attr::complex(
        "x509Certificates",
        CERT_SUB,
        "X.509 certificates issued to the user.",
    )
    .multi(),
];

static GROUP_ATTRS: &[Attr] = &[
    Attr::string(
        "displayName",
        "A human-readable name for the group; unique per provider.",
    )
    .required(),
    Attr::complex(
        "members",
        &[
            Attr::string("value", "The id of a User that is a member of the group.")
                .exact()
                .immutable(),
            Attr::reference("$ref", &["User", "Group"], "The URI of the member.").immutable(),
            Attr::string("type", "The type of the member.")
                .canonical(&["User", "Group"])
                .immutable(),
            Attr::string("display", "A human-readable name of the member."),
        ],
        "The members of the group (users only).",
    )
    .multi(),
];

static ENTERPRISE_ATTRS: &[Attr] = &[
    Attr::string(
        "employeeNumber",
        "Numeric or alphanumeric identifier assigned to a person.",
    ),
    Attr::string("costCenter", "Identifies the name of a cost center."),
    Attr::string("organization", "Identifies the name of an organization."),
    Attr::string("division", "Identifies the name of a division."),
    Attr::string("department", "Identifies the name of a department."),
    Attr::complex(
        "manager",
        &[
            Attr::string(
                "value",
                "The id of the SCIM resource representing the manager.",
            )
            .exact(),
            Attr::reference("$ref", &["User"], "The URI of the manager."),
            Attr::string("displayName", "The display name of the manager.").read_only(),
        ],
        "The user's manager.",
    ),
];

pub(crate) static USER: Schema = Schema {
    id: USER_SCHEMA,
    name: "User",
    description: "User Account",
    attrs: USER_ATTRS,
};
pub(crate) static GROUP: Schema = Schema {
    id: GROUP_SCHEMA,
    name: "Group",
    description: "Group",
    attrs: GROUP_ATTRS,
};
pub(crate) static ENTERPRISE: Schema = Schema {
    id: ENTERPRISE_SCHEMA,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attrs: ENTERPRISE_ATTRS,
};

static SUPPORTED: &[Attr] = &[Attr::new(
    "supported",
    Ty::Boolean,
    "Whether the operation is supported.",
)
.required()];

static SPC_ATTRS: &[Attr] = &[
    Attr::reference(
        "documentationUri",
        &["external"],
        "An HTTP-addressable URL pointing to the service provider's human-consumable help documentation.",
    )
    .read_only(),
    Attr::complex("patch", SUPPORTED, "PATCH configuration options.")
        .required()
        .read_only(),
    Attr::complex(
        "bulk",
        &[
            Attr::new("supported", Ty::Boolean, "Whether bulk is supported.").required(),
            Attr::new("maxOperations", Ty::Integer, "The maximum number of operations.").required(),
            Attr::new("maxPayloadSize", Ty::Integer, "The maximum payload size in bytes.")
                .required(),
        ],
        "Bulk configuration options.",
    )
    .required()
    .read_only(),
    Attr::complex(
        "filter",
        &[
            Attr::new("supported", Ty::Boolean, "Whether filtering is supported.").required(),
            Attr::new("maxResults", Ty::Integer, "The maximum number of resources returned.")
                .required(),
        ],
        "Filter options.",
    )
    .required()
    .read_only(),
    Attr::complex("changePassword", SUPPORTED, "Change password options.")
        .required()
        .read_only(),
    Attr::complex("sort", SUPPORTED, "Sort options.")
        .required()
        .read_only(),
    Attr::complex("etag", SUPPORTED, "ETag options.")
        .required()
        .read_only(),
    Attr::complex(
        "authenticationSchemes",
        &[
            Attr::string("type", "The authentication scheme.")
                .required()
                .canonical(&["oauth", "oauth2", "oauthbearertoken", "httpbasic", "httpdigest"]),
            Attr::string("name", "The common authentication scheme name.").required(),
            Attr::string("description", "A description of the authentication scheme.").required(),
            Attr::reference("specUri", &["external"], "The specification of the scheme."),
            Attr::reference(
                "documentationUri",
                &["external"],
                "The documentation of the scheme.",
            ),
            Attr::new("primary", Ty::Boolean, "Whether this is the preferred scheme."),
        ],
        "Supported authentication schemes.",
    )
    .multi()
    .required()
    .read_only(),
];

static RESOURCE_TYPE_ATTRS: &[Attr] = &[
    Attr::string("id", "The resource type's server unique id.").read_only(),
    Attr::string("name", "The resource type name.")
        .required()
        .read_only(),
    Attr::string(
        "description",
        "The resource type's human-readable description.",
    )
    .read_only(),
    Attr::reference(
        "endpoint",
        &["uri"],
        "The resource type's HTTP-addressable endpoint relative to the base URL.",
    )
    .required()
    .read_only(),
    Attr::reference(
        "schema",
        &["uri"],
        "The resource type's primary schema URI.",
    )
    .required()
    .read_only(),
    Attr::complex(
        "schemaExtensions",
        &[
            Attr::reference("schema", &["uri"], "The URI of a schema extension.")
                .required()
                .read_only(),
            Attr::new(
                "required",
                Ty::Boolean,
                "Whether resources must include this extension.",
            )
            .required()
            .read_only(),
        ],
        "Schema extensions of the resource type.",
    )
    .multi()
    .read_only(),
];

static SCHEMA_ATTRIBUTE_SUB: &[Attr] = &[
    Attr::string("name", "The attribute's name.")
        .exact()
        .required()
        .read_only(),
    Attr::string("type", "The attribute's data type.")
        .required()
        .read_only()
        .canonical(&[
            "string",
            "complex",
            "boolean",
            "decimal",
            "integer",
            "dateTime",
            "reference",
            "binary",
        ]),
    Attr::new(
        "multiValued",
        Ty::Boolean,
        "Whether the attribute is multi-valued.",
    )
    .required()
    .read_only(),
    Attr::string("description", "The attribute's description.").read_only(),
    Attr::new(
        "required",
        Ty::Boolean,
        "Whether the attribute is required.",
    )
    .read_only(),
    Attr::string("canonicalValues", "Suggested canonical values.")
        .multi()
        .read_only(),
    Attr::new(
        "caseExact",
        Ty::Boolean,
        "Whether the values are case sensitive.",
    )
    .read_only(),
    Attr::string("mutability", "Whether the attribute can be modified.")
        .read_only()
        .canonical(&["readOnly", "readWrite", "immutable", "writeOnly"]),
    Attr::string("returned", "When the attribute is returned.")
        .read_only()
        .canonical(&["always", "never", "default", "request"]),
    Attr::string("uniqueness", "How the values are unique.")
        .read_only()
        .canonical(&["none", "server", "global"]),
    Attr::string(
        "referenceTypes",
        "The resource types a reference may refer to.",
    )
    .multi()
    .read_only(),
];

static SCHEMA_ATTRIBUTE_WITH_SUB: &[Attr] = &[
    Attr::string("name", "The attribute's name.")
        .exact()
        .required()
        .read_only(),
    Attr::string("type", "The attribute's data type.")
        .required()
        .read_only(),
    Attr::new(
        "multiValued",
        Ty::Boolean,
        "Whether the attribute is multi-valued.",
    )
    .required()
    .read_only(),
    Attr::string("description", "The attribute's description.").read_only(),
    Attr::new(
        "required",
        Ty::Boolean,
        "Whether the attribute is required.",
    )
    .read_only(),
    Attr::string("canonicalValues", "Suggested canonical values.")
        .multi()
        .read_only(),
    Attr::new(
        "caseExact",
        Ty::Boolean,
        "Whether the values are case sensitive.",
    )
    .read_only(),
    Attr::string("mutability", "Whether the attribute can be modified.").read_only(),
    Attr::string("returned", "When the attribute is returned.").read_only(),
    Attr::string("uniqueness", "How the values are unique.").read_only(),
    Attr::string(
        "referenceTypes",
        "The resource types a reference may refer to.",
    )
    .multi()
    .read_only(),
    Attr::complex(
        "subAttributes",
        SCHEMA_ATTRIBUTE_SUB,
        "The sub-attributes of a complex attribute.",
    )
    .multi()
    .read_only(),
];

static SCHEMA_ATTRS: &[Attr] = &[
    Attr::string("id", "The unique URI of the schema.")
        .required()
        .read_only(),
    Attr::string("name", "The schema's human-readable name.").read_only(),
    Attr::string("description", "The schema's human-readable description.").read_only(),
    Attr::complex(
        "attributes",
        SCHEMA_ATTRIBUTE_WITH_SUB,
        "The attributes of the schema.",
    )
    .multi()
    .required()
    .read_only(),
];

pub(crate) static SPC: Schema = Schema {
    id: SPC_SCHEMA,
    name: "ServiceProviderConfig",
    description: "Service Provider Configuration",
    attrs: SPC_ATTRS,
};
pub(crate) static RESOURCE_TYPE: Schema = Schema {
    id: RESOURCE_TYPE_SCHEMA,
    name: "ResourceType",
    description: "Resource Type",
    attrs: RESOURCE_TYPE_ATTRS,
};
pub(crate) static SCHEMA: Schema = Schema {
    id: SCHEMA_SCHEMA,
    name: "Schema",
    description: "Schema definition",
    attrs: SCHEMA_ATTRS,
};

/// Every schema published at `/Schemas`, in order.
pub(crate) static ALL: &[&Schema] = &[&USER, &GROUP, &ENTERPRISE, &SPC, &RESOURCE_TYPE, &SCHEMA];

static USER_EXTENSIONS: &[&Schema] = &[&ENTERPRISE];

/// The two resource types served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    User,
    Group,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }
    pub fn core(self) -> &'static Schema {
        match self {
            Kind::User => &USER,
            Kind::Group => &GROUP,
        }
    }
    pub fn extensions(self) -> &'static [&'static Schema] {
        match self {
            Kind::User => USER_EXTENSIONS,
            Kind::Group => &[],
        }
    }
    /// A core or common attribute (no schema URN prefix).
    pub fn core_attr(self, name: &str) -> Option<&'static Attr> {
        find(COMMON, name).or_else(|| self.core().attr(name))
    }
    /// The known extension schema whose URN is `urn`, case-insensitively.
    pub fn extension(self, urn: &str) -> Option<&'static Schema> {
        self.extensions()
            .iter()
            .copied()
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    pub fn resource_type_json(self, base_url: &str) -> Value {
        let mut v = json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": self.name(),
            "name": self.name(),
            "endpoint": format!("/{}", self.endpoint()),
            "description": self.core().description,
            "schema": self.core().id,
            "meta": {
                "resourceType": "ResourceType",
                "location": format!("{base_url}/ResourceTypes/{}", self.name()),
            },
        });
        let exts: Vec<Value> = self
            .extensions()
            .iter()
            .map(|s| json!({"schema": s.id, "required": false}))
            .collect();
        if !exts.is_empty() {
            if let Some(m) = v.as_object_mut() {
                m.insert("schemaExtensions".into(), Value::Array(exts));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_case_insensitive() {
        assert_eq!(
            Kind::User.core_attr("USERNAME").map(|a| a.name),
            Some("userName")
        );
        assert_eq!(
            Kind::User.core_attr("externalid").map(|a| a.name),
            Some("externalId")
        );
        assert!(Kind::User.core_attr("members").is_none());
        assert_eq!(
            Kind::Group.core_attr("Members").map(|a| a.name),
            Some("members")
        );
        let emails = Kind::User.core_attr("emails").expect("emails");
        assert!(emails.multi);
        assert_eq!(emails.sub_attr("VALUE").map(|a| a.name), Some("value"));
        assert!(Kind::User
            .extension("urn:ietf:params:scim:schemas:extension:ENTERPRISE:2.0:User")
            .is_some());
    }

    #[test]
    fn schema_json_has_rfc_shape() {
        let v = USER.to_json("http://x/scim/v2");
        assert_eq!(v["id"], USER_SCHEMA);
        let attrs = v["attributes"].as_array().expect("attributes");
        let user_name = attrs
            .iter()
            .find(|a| a["name"] == "userName")
            .expect("userName");
        assert_eq!(user_name["uniqueness"], "server");
        assert_eq!(user_name["required"], true);
        assert_eq!(user_name["caseExact"], false);
        let emails = attrs
            .iter()
            .find(|a| a["name"] == "emails")
            .expect("emails");
        assert_eq!(emails["multiValued"], true);
        assert_eq!(emails["subAttributes"].as_array().map(Vec::len), Some(4));
    }
}
