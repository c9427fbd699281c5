//! A scratch namespace — a vhost and a database of the same name — for the demo and the
//! benchmarks, so they never touch anyone's data. Creating one first removes any leftover of
//! the same name.

use anyhow::Context;
use simflow_runtime::Settings;
use simflow_runtime::management::Management;

/// A vhost and a database made for one run.
#[derive(Debug)]
pub struct Scratch {
    /// Settings pointing at the namespace.
    pub settings: Settings,
    /// Its name.
    pub name: String,
    management: Management,
}

impl Scratch {
    /// Recreates the vhost (with full permissions for the configured management user) and drops
    /// the database of that name (migrations create it again).
    pub async fn create(settings: &Settings, name: &str) -> anyhow::Result<Scratch> {
        let management = Management::new(&settings.amqp);
        management
            .delete_vhost(name)
            .await
            .context("this needs the RabbitMQ management API (deploy/setup.sh enables it)")?;
        management.create_vhost(name).await?;
        management
            .set_permissions(name, &settings.amqp.management_user, ".*", ".*", ".*")
            .await?;
        let mut settings = settings.in_namespace(name, name);
        settings.http.listen = "127.0.0.1:0".into();
        simflow_runtime::db::drop_database(&settings.database.url).await?;
        Ok(Scratch {
            settings,
            name: name.to_owned(),
            management,
        })
    }

    /// A fresh scratch namespace for one benchmark run, `simflow_bench_` and a random suffix.
    pub async fn for_bench(settings: &Settings) -> anyhow::Result<Scratch> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Scratch::create(settings, &format!("simflow_bench_{}", &suffix[..8])).await
    }

    /// Deletes the vhost and drops the database.
    pub async fn remove(self) {
        if let Err(error) = self.management.delete_vhost(&self.name).await {
            eprintln!("could not delete vhost {}: {error:#}", self.name);
        }
        if let Err(error) = simflow_runtime::db::drop_database(&self.settings.database.url).await {
            eprintln!("could not drop database {}: {error:#}", self.name);
        }
    }
}
