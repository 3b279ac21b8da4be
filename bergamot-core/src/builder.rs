//! The setter methods of the builders ([`CheckBuilder`](crate::model::CheckBuilder),
//! [`PolicyBuilder`](crate::model::PolicyBuilder),
//! [`CheckStateBuilder`](crate::state::CheckStateBuilder)): one documented
//! method per field, each consuming and returning the builder.

/// `setters!(inner; /// doc \n field: Type, /// doc \n field: into Type, ...)`
/// writes `pub fn field(self, value: Type) -> Self` setting `self.inner.field`;
/// with `into`, the method takes `impl Into<Type>`.
macro_rules! setters {
    ($inner:ident;) => {};
    ($inner:ident; $(#[$doc:meta])* $field:ident: into $ty:ty $(, $($rest:tt)*)?) => {
        $(#[$doc])*
        pub fn $field(mut self, value: impl Into<$ty>) -> Self {
            self.$inner.$field = value.into();
            self
        }
        $crate::builder::setters!($inner; $($($rest)*)?);
    };
    ($inner:ident; $(#[$doc:meta])* $field:ident: $ty:ty $(, $($rest:tt)*)?) => {
        $(#[$doc])*
        pub fn $field(mut self, value: $ty) -> Self {
            self.$inner.$field = value;
            self
        }
        $crate::builder::setters!($inner; $($($rest)*)?);
    };
}

pub(crate) use setters;
